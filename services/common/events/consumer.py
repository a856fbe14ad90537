"""Consuming events: decode, deduplicate in the inbox, handle, commit DB, then commit offset.

For each record, in order:

1. decode it by its ``event-type`` header (failure: dead-letter topic);
2. in ONE database transaction: insert ``(consumer group, event id)`` into the inbox (if it
   is already there the event was handled before: skip the handler), then call
   ``handler(session, event, envelope)``;
3. commit that transaction, and only then commit the record's Kafka offset.

A crash anywhere before step 3 redelivers the record; the inbox makes the redelivery a
no-op once the handler's transaction committed. A handler error that is not transient, and a
record that does not decode, go to ``<topic>.dlq`` (original key, value and headers plus
``dlq-*`` error headers, acknowledged by the broker before the offset is committed), so a
poison message neither blocks its partition nor vanishes. Transient errors (database
operational errors, :class:`TransientError`) are retried with backoff; when the retries run
out the consumer seeks back and tries the record again on a later poll, without committing.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.common.config import KafkaSettings
from services.common.events.envelope import (
    DecodeError,
    Envelope,
    EventRegistry,
    decode_record,
    default_registry,
    extract_trace_context,
    headers_dict,
)
from services.common.events.relay import producer_config
from services.common.events.tables import InboxRow
from services.common.events.topics import dead_letter_topic

log = logging.getLogger(__name__)

HEADER_DLQ_ERROR = "dlq-error"
HEADER_DLQ_ERROR_TYPE = "dlq-error-type"
HEADER_DLQ_TOPIC = "dlq-original-topic"
HEADER_DLQ_PARTITION = "dlq-original-partition"
HEADER_DLQ_OFFSET = "dlq-original-offset"
HEADER_DLQ_GROUP = "dlq-consumer-group"
HEADER_DLQ_FAILED_AT = "dlq-failed-at"
DLQ_HEADERS = (
    HEADER_DLQ_ERROR,
    HEADER_DLQ_ERROR_TYPE,
    HEADER_DLQ_TOPIC,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_GROUP,
    HEADER_DLQ_FAILED_AT,
)
_MAX_ERROR_BYTES = 4096


class Handler(Protocol):
    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None: ...


class TransientError(Exception):
    """Raised by a handler for a failure worth retrying (a peer is briefly unavailable)."""


def is_transient(exc: BaseException) -> bool:
    """Failures that may succeed on retry: they never send a record to the DLQ."""
    if isinstance(exc, TransientError | sa_exc.OperationalError | sa_exc.TimeoutError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class _AlreadyHandled(Exception):
    """The inbox already holds this event for this group (raised to end the transaction)."""


class _Retry(Exception):
    """Transient retries ran out: leave the offset alone and try again on a later poll."""


def consumer_config(settings: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "group_id": group_id,
        # Offsets are committed by hand after the database transaction.
        "enable_auto_commit": False,
        # kafka-python defaults to "latest", which would skip events written before the
        # group's first start.
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "max_poll_records": 100,
    }
    config.update(overrides)
    return config


class EventConsumer:
    """One consumer-group member that hands events to ``handler`` exactly once in effect.

    ``poll_once(timeout)`` handles what one poll returns; ``run(stop_event)`` loops until the
    event is set. Not thread-safe (neither is KafkaConsumer): use it from one thread.
    """

    def __init__(
        self,
        topics: Iterable[str],
        group_id: str,
        handler: Handler,
        session_factory: sessionmaker[Session],
        settings: KafkaSettings,
        *,
        registry: EventRegistry | None = None,
        transient_retries: int = 3,
        retry_backoff_s: float = 0.2,
        tracer_provider: TracerProvider | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        dead_letter_topic_for: Callable[[str], str] = dead_letter_topic,
    ) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self._handler = handler
        self._session_factory = session_factory
        self._settings = settings
        self._registry = registry if registry is not None else default_registry
        self._transient_retries = transient_retries
        self._retry_backoff_s = retry_backoff_s
        self._dead_letter_topic_for = dead_letter_topic_for
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._consumer = KafkaConsumer(
            *self.topics, **consumer_config(settings, group_id, **(consumer_overrides or {}))
        )
        self._dlq_producer: KafkaProducer | None = None
        self._closed = False

    # -- public -------------------------------------------------------------------------

    def poll_once(self, timeout: float = 0.5) -> int:
        """Poll once (waiting at most ``timeout`` seconds); return the records consumed
        (handled, skipped as duplicates, or dead-lettered) and committed."""
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        done = 0
        for tp, records in batches.items():
            for record in records:
                # After a rebalance the rest of a lost partition belongs to another member.
                if tp not in self._consumer.assignment():
                    break
                try:
                    self._consume(record)
                except _Retry:
                    self._consumer.seek(tp, record.offset)
                    break
                except BaseException:
                    # Rewind so a caller that goes on polling sees this record again.
                    self._consumer.seek(tp, record.offset)
                    raise
                done += 1
        return done

    def run(self, stop_event: threading.Event, poll_timeout: float = 0.2) -> None:
        """Consume until ``stop_event`` is set; does not close the consumer.

        A failure that is not the record's fault (the dead-letter topic cannot be written)
        is logged and retried after a pause, from the same record.
        """
        backoff = self._retry_backoff_s
        while not stop_event.is_set():
            try:
                self.poll_once(poll_timeout)
            except Exception:
                log.exception("consumer %s failed; retrying in %.1f s", self.group_id, backoff)
                stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = self._retry_backoff_s

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    def close(self) -> None:
        """Leave the group without committing anything, and close the DLQ producer."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False)
        finally:
            if self._dlq_producer is not None:
                self._dlq_producer.close(timeout=self._settings.request_timeout_ms / 1000)
                self._dlq_producer = None

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one record ---------------------------------------------------------------------

    def _consume(self, record: Any) -> None:
        try:
            event, envelope = decode_record(record, self._registry)
        except DecodeError as exc:
            log.warning(
                "undecodable record %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            self._dead_letter(record, exc)
            self._commit_offset(record)
            return
        context = extract_trace_context(envelope.headers)
        parent = trace.get_current_span(context).get_span_context()
        links = [Link(parent)] if parent.is_valid else []
        with self._tracer.start_as_current_span(
            f"{record.topic} process",
            context=context,
            kind=SpanKind.CONSUMER,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self.group_id,
                "messaging.message.id": envelope.event_id,
                "idc.event_type": envelope.event_type,
            },
        ) as span:
            try:
                self._handle_with_retries(event, envelope)
            except _Retry:
                span.set_status(Status(StatusCode.ERROR, "transient failure, will retry"))
                raise
            except Exception as exc:
                log.exception(
                    "handler failed on %s %s (%s[%d]@%d): dead-lettering",
                    envelope.event_type,
                    envelope.event_id,
                    record.topic,
                    record.partition,
                    record.offset,
                )
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                self._dead_letter(record, exc)
        self._commit_offset(record)

    def _handle_with_retries(self, event: Message, envelope: Envelope) -> None:
        delay = self._retry_backoff_s
        for attempt in range(self._transient_retries + 1):
            try:
                self._handle_in_transaction(event, envelope)
                return
            except _AlreadyHandled:
                log.debug("event %s already handled by %s", envelope.event_id, self.group_id)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == self._transient_retries:
                    log.warning(
                        "transient failure on event %s, retries exhausted: %s",
                        envelope.event_id,
                        exc,
                    )
                    raise _Retry from exc
                log.info("transient failure on event %s, retrying: %s", envelope.event_id, exc)
                time.sleep(delay)
                delay *= 2

    def _handle_in_transaction(self, event: Message, envelope: Envelope) -> None:
        with self._session_factory() as session, session.begin():
            seen = session.scalar(
                select(InboxRow.id).where(
                    InboxRow.consumer_group == self.group_id,
                    InboxRow.event_id == envelope.event_id,
                )
            )
            if seen is not None:
                raise _AlreadyHandled
            session.add(
                InboxRow(
                    consumer_group=self.group_id,
                    event_id=envelope.event_id,
                    event_type=envelope.event_type,
                    topic=envelope.topic,
                    partition=envelope.partition,
                    offset=envelope.offset,
                )
            )
            try:
                session.flush()
            except sa_exc.IntegrityError as exc:
                # Another member of the group handled it concurrently (rebalance).
                raise _AlreadyHandled from exc
            self._handler(session, event, envelope)

    # -- dead letters and offsets -------------------------------------------------------

    def _dead_letter(self, record: Any, error: BaseException) -> None:
        """Publish ``record`` to its dead-letter topic and wait for the acknowledgement."""
        message = f"{type(error).__name__}: {error}"
        if error.__cause__ is not None and not isinstance(error, DecodeError):
            message += "\n" + "".join(traceback.format_exception_only(error.__cause__))
        headers = [(name, value) for name, value in headers_dict(record.headers).items()]
        headers = [(n, v) for n, v in headers if n not in DLQ_HEADERS]
        headers += [
            (HEADER_DLQ_ERROR, message.encode("utf-8", errors="replace")[:_MAX_ERROR_BYTES]),
            (HEADER_DLQ_ERROR_TYPE, type(error).__name__.encode()),
            (HEADER_DLQ_TOPIC, record.topic.encode()),
            (HEADER_DLQ_PARTITION, str(record.partition).encode()),
            (HEADER_DLQ_OFFSET, str(record.offset).encode()),
            (HEADER_DLQ_GROUP, self.group_id.encode()),
            (HEADER_DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
        ]
        producer = self._get_dlq_producer()
        future = producer.send(
            self._dead_letter_topic_for(record.topic),
            key=record.key,
            value=record.value,
            headers=headers,
        )
        producer.flush(timeout=self._settings.request_timeout_ms / 1000)
        # Raises if the broker did not take it: then the offset is not committed either.
        future.get(timeout=self._settings.request_timeout_ms / 1000)

    def _commit_offset(self, record: Any) -> None:
        tp = TopicPartition(record.topic, record.partition)
        try:
            self._consumer.commit(
                {tp: OffsetAndMetadata(record.offset + 1, "", _leader_epoch(record))}
            )
        except CommitFailedError:
            # The partition moved to another member, which will see the record again; the
            # inbox turns that into a no-op.
            log.warning(
                "offset commit for %s[%d]@%d failed after a rebalance",
                record.topic,
                record.partition,
                record.offset,
            )

    def _get_dlq_producer(self) -> KafkaProducer:
        if self._dlq_producer is None:
            self._dlq_producer = KafkaProducer(**producer_config(self._settings))
        return self._dlq_producer


def _leader_epoch(record: Any) -> int:
    epoch = getattr(record, "leader_epoch", None)
    return -1 if epoch is None else int(epoch)
