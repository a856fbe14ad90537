"""The outbox relay: publishes unsent outbox rows to Kafka, then marks them sent.

Delivery is at least once: rows are marked sent only after the broker acknowledged them
(acks=all, idempotent producer), so a crash between the publish and the mark publishes them
again, and consumers deduplicate by event id.

On PostgreSQL the batch is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` and the row
locks are held until the mark commits, so several relays on one database do not publish the
same row. A relay also holds back every row whose key has an earlier unsent row claimed by
another relay, which keeps per-key order (claim and hold-back are one statement). The mark
commits without waiting for the WAL flush: losing it in a database crash only publishes its
rows again. On SQLite the batch is read in one short
transaction and marked in another (holding SQLite's single write lock across a publish would
stall every writer of the service): run one relay per SQLite database.

The relay wakes as soon as a session of its own session factory commits a transaction that
wrote outbox rows (an in-process hook), so an event does not wait for the next poll; the
poll stays as the fallback for rows written by other processes or factories.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaProducer
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from services.common import metric_catalogue as catalogue
from services.common.config import KafkaSettings
from services.common.events.connection import connection_config
from services.common.events.envelope import build_headers
from services.common.events.tables import OutboxRow, utcnow
from services.common.metrics import counter

log = logging.getLogger(__name__)
_SENT = counter(catalogue.MESSAGES_SENT)

# Session.info flag: this transaction wrote outbox rows.
_OUTBOX_WRITTEN = "idc_outbox_written"


def producer_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Producer settings for events: every acknowledged record is on all in-sync replicas,
    and retries cannot duplicate or reorder records within a partition."""
    config = connection_config(
        settings,
        acks="all",
        enable_idempotence=True,
        retries=2_147_483_647,
        # At most 5 in flight keeps the idempotent producer's ordering guarantee.
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=settings.request_timeout_ms,
        delivery_timeout_ms=max(120_000, settings.request_timeout_ms * 2),
    )
    config.update(overrides)
    return config


class OutboxRelay:
    """Publishes the outbox of one database.

    ``run_once()`` publishes one batch and returns how many rows it marked sent;
    ``run(stop_event)`` loops until the event is set. Not thread-safe: one thread per relay.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: KafkaSettings,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 0.2,
        flush_timeout_s: float | None = None,
        producer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._flush_timeout_s = (
            flush_timeout_s if flush_timeout_s is not None else settings.request_timeout_ms / 1000
        )
        self._producer_overrides = dict(producer_overrides or {})
        self._producer: KafkaProducer | None = None
        self._wake = threading.Event()
        self._hooks: dict[str, Callable[..., None]] = {
            "after_flush": self._note_outbox_rows,
            "after_commit": self._wake_if_outbox_rows,
            "after_rollback": self._forget_outbox_rows,
        }
        for name, hook in self._hooks.items():
            sa_event.listen(session_factory, name, hook)

    # -- wake-up on commit --------------------------------------------------------------

    @staticmethod
    def _note_outbox_rows(session: Session, _context: object) -> None:
        if any(isinstance(row, OutboxRow) for row in session.new):
            session.info[_OUTBOX_WRITTEN] = True

    def _wake_if_outbox_rows(self, session: Session) -> None:
        if session.info.pop(_OUTBOX_WRITTEN, False):
            self._wake.set()

    @staticmethod
    def _forget_outbox_rows(session: Session) -> None:
        session.info.pop(_OUTBOX_WRITTEN, None)

    # -- public -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Publish one batch of unsent rows in id order; return the number marked sent."""
        with self._session_factory() as session:
            if session.get_bind().dialect.name == "postgresql":
                return self._run_once_locked(session)
            return self._run_once_unlocked(session)

    def run(self, stop_event: threading.Event) -> None:
        """Relay until ``stop_event`` is set; a failure backs off and retries. Between
        batches it waits for a commit that wrote outbox rows, or the poll interval."""
        backoff = self._poll_interval_s
        while not stop_event.is_set():
            # Cleared before reading: a commit during the publish wakes the next round.
            self._wake.clear()
            try:
                sent = self.run_once()
            except Exception:
                log.exception("outbox relay failed; retrying in %.1f s", backoff)
                self._discard_producer()
                stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self._poll_interval_s
            # A full batch means more is probably waiting: go again at once.
            if sent < self._batch_size:
                self._wake.wait(self._poll_interval_s)

    def close(self) -> None:
        for name, hook in self._hooks.items():
            if sa_event.contains(self._session_factory, name, hook):
                sa_event.remove(self._session_factory, name, hook)
        if self._producer is not None:
            self._producer.close(timeout=self._flush_timeout_s)
            self._producer = None

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps (separate methods so failure-injection tests can override one) -----------

    def _run_once_locked(self, session: Session) -> int:
        with session.begin():
            rows = self._claim_in_key_order(session)
            if not rows:
                return 0
            published = self._publish(rows)
            # The mark need not wait for the WAL flush (the next batch waits for it): a
            # mark lost in a database crash publishes its rows again, which at-least-once
            # delivery allows (consumers deduplicate); the writers' commits stay durable.
            session.execute(text("SET LOCAL synchronous_commit = off"))
            self._mark_sent(session, published)
        return len(published)

    def _run_once_unlocked(self, session: Session) -> int:
        with session.begin():
            rows = self._claim(session)
        if not rows:
            return 0
        published = self._publish(rows)
        with session.begin():
            self._mark_sent(session, published)
        return len(published)

    def _claim(self, session: Session) -> list[OutboxRow]:
        query = (
            select(OutboxRow)
            .where(OutboxRow.sent_at.is_(None))
            .order_by(OutboxRow.id)
            .limit(self._batch_size)
        )
        return list(session.scalars(query))

    def _claim_in_key_order(self, session: Session) -> list[OutboxRow]:
        """Lock a batch of unsent rows (skipping rows another relay holds), without the
        rows whose key has an earlier unsent row outside the batch (another relay holds
        it: publishing them now would overtake it). One statement, one round trip: the
        batch and the earlier rows are judged on the same snapshot."""
        claimed = (
            select(OutboxRow.id)
            .where(OutboxRow.sent_at.is_(None))
            .order_by(OutboxRow.id)
            .limit(self._batch_size)
            .with_for_update(skip_locked=True)
            .cte("claimed")
        )
        earlier = aliased(OutboxRow)
        earliest_elsewhere = (
            select(func.min(earlier.id))
            .where(
                earlier.sent_at.is_(None),
                earlier.key == OutboxRow.key,
                earlier.id.not_in(select(claimed.c.id)),
            )
            .scalar_subquery()
        )
        rows = session.execute(
            select(OutboxRow, earliest_elsewhere)
            .join(claimed, claimed.c.id == OutboxRow.id)
            .order_by(OutboxRow.id)
        ).all()
        kept = [row for row, first in rows if first is None or row.id < first]
        if len(kept) < len(rows):
            log.debug("holding back %d outbox rows behind another relay", len(rows) - len(kept))
        return kept

    def _publish(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        """Send ``rows`` in order and wait for the broker; return the rows to mark sent.

        After a failed send, later rows with the same key are not marked either, so they
        are sent again after the failed one and the consumer sees the key's order.
        """
        producer = self._get_producer()
        futures = [
            producer.send(
                row.topic,
                key=row.key,
                value=row.payload,
                headers=build_headers(
                    row.published_event_id, row.event_type, row.schema_version, row.headers
                ),
            )
            for row in rows
        ]
        producer.flush(timeout=self._flush_timeout_s)
        published: list[OutboxRow] = []
        failed_keys: set[bytes | None] = set()
        first_error: Exception | None = None
        for row, future in zip(rows, futures, strict=True):
            try:
                future.get(timeout=0)
            except Exception as exc:
                failed_keys.add(row.key)
                first_error = first_error or exc
                continue
            if row.key is not None and row.key in failed_keys:
                continue
            published.append(row)
        for topic, sent in Counter(row.topic for row in published).items():
            _SENT.add(sent, {"messaging.destination.name": topic})
        if first_error is not None:
            log.warning(
                "outbox relay: %d of %d records not acknowledged: %s",
                len(rows) - len(published),
                len(rows),
                first_error,
            )
            # An idempotent producer that lost records may be fenced: start a fresh one.
            self._discard_producer()
            if not published:
                raise first_error
        return published

    def _mark_sent(self, session: Session, rows: Iterable[OutboxRow]) -> None:
        ids = [row.id for row in rows]
        if ids:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids))
                .values(sent_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    # -- producer -----------------------------------------------------------------------

    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **producer_config(self._settings, **self._producer_overrides)
            )
        return self._producer

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:
                log.debug("closing a failed producer raised", exc_info=True)
