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

A :class:`BatchEventConsumer` keeps those guarantees for what one poll returns at once: it
decodes every record (failures: dead-letter topic), then in ONE transaction inserts the
records' inbox rows in bulk (a conflict means "handled before") and calls
``handler(session, items)`` with only the new ones, commits, sends the dead letters, and
commits the highest offset of each partition still assigned, once. A handler that raises
:class:`RejectedItems` for bad input has those records dead-lettered and the batch handled
again without them; any other error that is not transient sends the batch through the
per-record path above, so only the poison record goes to the dead-letter topic.

Both watch their own assignment after each poll (rule and measurements in
services/common/events/assignment.py): a member that has had no partitions and no formed
group generation for longer than ``IDC_KAFKA_UNASSIGNED_ALARM_S`` logs a warning, raises
:meth:`EventConsumer.unassigned_alarm`, closes its KafkaConsumer, has the broker drop the
group's state keeping its committed offsets (:class:`BrokerGroupReset`), and creates a new
KafkaConsumer, all in the polling thread. Nothing is lost or applied twice: a stuck member
holds no partitions, so no record of its own is between database commit and offset commit;
the new member resumes from the group's committed offsets, and whatever is read again is
absorbed by the inbox.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, Self

from google.protobuf.message import Message
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import MemberState, OffsetAndMetadata, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.common import metric_catalogue as catalogue
from services.common.config import KafkaSettings
from services.common.events.assignment import AssignmentWatch, MemberView, Verdict
from services.common.events.bulk import insert_new
from services.common.events.connection import connection_config
from services.common.events.envelope import (
    HEADER_TRACEPARENT,
    DecodeError,
    Envelope,
    EventRegistry,
    decode_record,
    default_registry,
    extract_trace_context,
    headers_dict,
)
from services.common.events.relay import producer_config
from services.common.events.tables import InboxRow, inbox_table, utcnow
from services.common.events.topics import dead_letter_topic
from services.common.metrics import counter

log = logging.getLogger(__name__)
_CONSUMED = counter(catalogue.MESSAGES_CONSUMED)
_DEAD_LETTERED = counter(catalogue.DEAD_LETTERED)

# While a batch is in the database, the poll for the next one waits at most this long (or
# one fetch wait, if shorter) before the batch's offsets are committed: a long fetch wait,
# which an idle consumer wants, must not hold a finished batch's commit.
IN_FLIGHT_POLL_S = 0.05

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
# OpenTelemetry's default span link limit (OTEL_SPAN_LINK_COUNT_LIMIT): links of a batch span.
_MAX_LINKS = 128
# How often a consumer looks at its own assignment (a missing topic costs a metadata request).
_WATCH_INTERVAL_S = 1.0
# How long the unassigned alarm stays raised after recovering: several evaluations of the
# health monitor (every 2 s), so an episode that ended between two of them is still reported.
_ALARM_HOLD_S = 10.0


class Handler(Protocol):
    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None: ...


class BatchHandler(Protocol):
    """Handles several events in one transaction; ``items`` are in the order polled."""

    def __call__(self, session: Session, items: Sequence[tuple[Message, Envelope]]) -> None: ...


class RejectedItems(Exception):
    """Raised by a batch handler for items that can never be handled (bad input), by their
    position in ``items``: they go to the dead-letter topic and the rest is handled again."""

    def __init__(self, errors: Mapping[int, Exception]) -> None:
        super().__init__(f"{len(errors)} item(s) rejected")
        self.errors = dict(errors)


class TransientError(Exception):
    """Raised by a handler for a failure worth retrying (a peer is briefly unavailable)."""


def is_transient(exc: BaseException) -> bool:
    """Failures that may succeed on retry: they never send a record to the DLQ."""
    if isinstance(exc, TransientError | sa_exc.OperationalError | sa_exc.TimeoutError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class GroupReset(Protocol):
    """Clears a consumer group's state on the broker, or leaves it; says what it did."""

    def __call__(self, group_id: str) -> str: ...


class BrokerGroupReset:
    """Deletes a group on the broker and commits its offsets again, for a stuck group.

    On Tansu the group's coordinator state keeps a leader that has left
    (services/common/events/assignment.py): deleting the group clears it, and deletes the
    group's committed offsets with it, so they are read first and committed again after.
    Apache Kafka refuses to delete a group that still has members (GROUP_NOT_EMPTY); the group
    is then left as it is.

    No record is lost or applied twice. The offsets restored are those the group had
    committed, each after its records' database transaction. A member that joins between the
    delete and the restore finds no offsets and starts from the earliest record
    (``auto_offset_reset``), as the group does if the restore fails; the records it reads
    again are in the inbox already and are skipped.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings

    def __call__(self, group_id: str) -> str:
        admin = KafkaAdminClient(**connection_config(
            self._settings,
            request_timeout_ms=self._settings.request_timeout_ms,
            client_id=f"{group_id}-reset",
        ))
        try:
            committed = self._committed(admin, group_id)
            result = admin.delete_groups([group_id]).get(group_id)
            if result != "OK":
                return f"the broker kept the group ({result}); its offsets are unchanged"
            if not committed:
                return "the broker dropped the group's state; it had no committed offsets"
            return "the broker dropped the group's state; " + self._restore(
                admin, group_id, committed
            )
        finally:
            admin.close()

    @staticmethod
    def _committed(admin: KafkaAdminClient, group_id: str) -> dict[TopicPartition, Any]:
        return {
            tp: OffsetAndMetadata(meta.offset, meta.metadata or "", meta.leader_epoch)
            for tp, meta in admin.list_group_offsets(group_id).get(group_id, {}).items()
            if meta.offset >= 0
        }

    def _restore(
        self, admin: KafkaAdminClient, group_id: str, offsets: dict[TopicPartition, Any]
    ) -> str:
        """Commit ``offsets`` for the group and read them back; say which did not stick."""
        missing = dict(offsets)
        for _ in range(2):
            try:
                admin.alter_group_offsets(group_id, missing)
            except KafkaError as exc:
                # Tansu stores the offsets of a group it has just deleted, then fails to
                # update the group's record and drops the connection: read back what it holds.
                log.info("committing the offsets of group %s again: %s", group_id, exc)
            held = self._committed(admin, group_id)
            missing = {
                tp: meta for tp, meta in missing.items()
                if tp not in held or held[tp].offset != meta.offset
            }
            if not missing:
                return f"{len(offsets)} offset(s) restored"
        lost = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in missing))
        return (
            f"offsets of {lost} not restored: those partitions start again from the earliest "
            "record (the inbox skips what was handled)"
        )


class _AlreadyHandled(Exception):
    """The inbox already holds this event for this group (raised to end the transaction)."""


class _Retry(Exception):
    """Transient retries ran out: leave the offset alone and try again on a later poll."""


_Item = tuple[Any, Message, Envelope]  # (record, event, envelope)


class _BatchFailed(Exception):
    """A batch failed for a reason that is not transient: handle its records one by one."""


class _Rejected(Exception):
    """The batch handler rejected these items (ended the transaction)."""

    def __init__(self, items: list[tuple[_Item, Exception]]) -> None:
        super().__init__(f"{len(items)} item(s) rejected")
        self.items = items



def consumer_config(settings: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    config = connection_config(settings)
    config |= {
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
        group_reset: GroupReset | None = None,
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
        self._consumer_overrides = dict(consumer_overrides or {})
        self._consumer = self._new_kafka_consumer()
        # Set between closing a stuck KafkaConsumer and creating its successor.
        self._needs_consumer = False
        self._group_reset = group_reset if group_reset is not None else BrokerGroupReset(settings)
        self._watch = AssignmentWatch(
            f"consumer group {group_id} on {', '.join(self.topics)}",
            settings.unassigned_bound_s,
            _ALARM_HOLD_S,
        )
        # The watch is written by the polling thread and read by the health monitor's.
        self._watch_lock = threading.Lock()
        self._next_watch = 0.0
        self._recreations = 0
        self._dlq_producer: KafkaProducer | None = None
        self._closed = False
        # Written by the polling thread at each assignment look, read by the metrics scrape.
        self.partitions_assigned = 0

    # -- public -------------------------------------------------------------------------

    def poll_once(self, timeout: float = 0.5) -> int:
        """Poll once (waiting at most ``timeout`` seconds); return the records consumed
        (handled, skipped as duplicates, or dead-lettered) and committed.

        Then, at most once a second, look at the member's assignment and recreate the
        KafkaConsumer when it has waited too long for partitions (module docstring).
        """
        if self._needs_consumer:
            self._open()
        done = self._poll(timeout)
        if done:
            _CONSUMED.add(done, {"messaging.consumer.group.name": self.group_id})
        if self._settled():
            self._watch_assignment()
        return done

    def _poll(self, timeout: float) -> int:
        return self._consume_each(self._consumer.poll(timeout_ms=int(timeout * 1000)))

    def _settled(self) -> bool:
        """Nothing polled is waiting for its offset commit (always, one record at a time)."""
        return True

    @property
    def recreations(self) -> int:
        """KafkaConsumers closed and created again because the member was stuck."""
        return self._recreations

    def unassigned_alarm(self) -> list[str]:
        """What to report while the member is stuck without partitions (empty when not)."""
        with self._watch_lock:
            return self._watch.alarm(time.monotonic())

    def _consume_each(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> int:
        done = 0
        polled = list(batches.items())
        for index, (tp, records) in enumerate(polled):
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
                    # Rewind so a caller that goes on polling sees this record again, and
                    # the partitions not reached yet from their first record.
                    self._consumer.seek(tp, record.offset)
                    self._rewind(polled[index + 1 :])
                    raise
                done += 1
        return done

    def _rewind(self, polled: Iterable[tuple[TopicPartition, Sequence[Any]]]) -> None:
        """Seek each partition still assigned back to the first of its polled records."""
        assigned = self._consumer.assignment()
        for tp, records in polled:
            if records and tp in assigned:
                self._consumer.seek(tp, records[0].offset)

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

    @property
    def kafka_settings(self) -> KafkaSettings:
        return self._settings

    # -- the member's own assignment ----------------------------------------------------

    def _watch_assignment(self) -> None:
        now = time.monotonic()
        if now < self._next_watch:
            return
        self._next_watch = now + _WATCH_INTERVAL_S
        assigned = len(self._consumer.assignment())
        self.partitions_assigned = assigned
        formed = self._consumer.group_metadata().state == MemberState.STABLE
        available = (
            0
            if assigned or formed
            else sum(len(self._consumer.partitions_for_topic(t)) for t in self.topics)
        )
        with self._watch_lock:
            stuck_before = self._watch.recreations
            verdict = self._watch.observe(now, MemberView(formed, assigned, available))
            alarm = self._watch.alarm(now)
        if verdict is Verdict.HELD and stuck_before:
            log.info(
                "consumer group %s: the member has partitions or a formed generation again "
                "after %d recreation(s)",
                self.group_id,
                stuck_before,
            )
        elif verdict is Verdict.RECREATE:
            self._recreate(alarm[0])

    def _recreate(self, alarm: str) -> None:
        """Close the stuck KafkaConsumer, have the broker reset the group, open a new one."""
        log.warning("%s; recreating the consumer", alarm)
        self._recreations += 1
        self._needs_consumer = True
        self._consumer.close(autocommit=False)
        try:
            outcome = self._group_reset(self.group_id)
        except Exception as exc:
            outcome = f"could not reset the group on the broker: {type(exc).__name__}: {exc}"
        log.warning("consumer group %s: %s", self.group_id, outcome)
        self._open()

    def _open(self) -> None:
        self._consumer = self._new_kafka_consumer()
        self._needs_consumer = False

    def _new_kafka_consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            *self.topics,
            **consumer_config(self._settings, self.group_id, **self._consumer_overrides),
        )

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

    def __enter__(self) -> Self:
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
        _DEAD_LETTERED.add(
            1,
            {"messaging.consumer.group.name": self.group_id,
             "messaging.destination.name": record.topic},
        )

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


@dataclass
class _InFlight:
    """A polled batch whose transaction runs on the database thread."""

    batches: dict[TopicPartition, list[Any]]
    undecodable: list[tuple[Any, Exception]]
    # The records the handler rejected, once the transaction committed.
    rejected: Future[list[tuple[Any, Exception]]] | None

    @property
    def size(self) -> int:
        return sum(len(records) for records in self.batches.values())


class BatchEventConsumer(EventConsumer):
    """An :class:`EventConsumer` that handles what one poll returns in one transaction.

    ``handler(session, items)`` gets the poll's new events (not in the inbox yet, each event
    id once) in poll order. ``max_poll_records`` defaults to 500 (override in
    ``consumer_overrides``).

    Pipelined: while a batch's transaction runs on a database thread, the polling thread
    fetches and decodes the next poll. Once the transaction committed, the polling thread
    sends the batch's dead letters and commits its offsets (one commit for all partitions);
    only then does the next batch's transaction start. ``poll_once`` therefore returns the
    records of the batch it finished, usually polled by the call before.
    """

    def __init__(
        self,
        topics: Iterable[str],
        group_id: str,
        handler: BatchHandler,
        session_factory: sessionmaker[Session],
        settings: KafkaSettings,
        *,
        consumer_overrides: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        def one(session: Session, event: Message, envelope: Envelope) -> None:
            # The per-record path (after a batch failed) passes each event on its own; a
            # rejected one fails like any handler error and is dead-lettered.
            try:
                handler(session, [(event, envelope)])
            except RejectedItems as rejected:
                raise next(iter(rejected.errors.values())) from None

        super().__init__(
            topics, group_id, one, session_factory, settings,
            consumer_overrides={"max_poll_records": 500, **(consumer_overrides or {})},
            **kw,
        )
        self._batch_handler = handler
        self._database = ThreadPoolExecutor(1, thread_name_prefix=f"{group_id}-db")
        self._in_flight: _InFlight | None = None

    def _poll(self, timeout: float) -> int:
        previous, self._in_flight = self._in_flight, None
        if previous is not None:
            # A batch is in the database: wait briefly for the next one, then commit it.
            timeout = min(timeout, self._settings.fetch_max_wait_ms / 1000, IN_FLIGHT_POLL_S)
        polled = self._consumer.poll(timeout_ms=int(timeout * 1000))
        assigned = self._consumer.assignment()
        # After a rebalance the records of a lost partition belong to another member.
        batches = {tp: records for tp, records in polled.items() if records and tp in assigned}
        done = 0
        if previous is not None:
            try:
                done = self._finish(previous)
            except _Retry:
                self._rewind(batches.items())
                self._rewind(previous.batches.items())
                return 0
            except _BatchFailed:
                self._rewind(batches.items())
                return self._consume_each(previous.batches)
            except BaseException:
                self._rewind(batches.items())
                self._rewind(previous.batches.items())
                raise
        if batches:
            self._in_flight = self._start(batches)
        return done

    def _settled(self) -> bool:
        return self._in_flight is None

    def close(self) -> None:
        """Wait for a transaction in progress (its offsets stay uncommitted), then close."""
        if self._in_flight is not None and self._in_flight.rejected is not None:
            wait([self._in_flight.rejected])
        self._in_flight = None
        self._database.shutdown()
        super().close()

    def _start(self, batches: dict[TopicPartition, list[Any]]) -> _InFlight:
        items: list[_Item] = []
        undecodable: list[tuple[Any, Exception]] = []
        for records in batches.values():
            for record in records:
                try:
                    event, envelope = decode_record(record, self._registry)
                except DecodeError as exc:
                    log.warning(
                        "undecodable record %s[%d]@%d: %s",
                        record.topic, record.partition, record.offset, exc,
                    )
                    undecodable.append((record, exc))
                else:
                    items.append((record, event, envelope))
        rejected = self._database.submit(self._handle_batch, items) if items else None
        return _InFlight(batches, undecodable, rejected)

    def _finish(self, batch: _InFlight) -> int:
        """Wait for ``batch``'s transaction, dead-letter what failed, commit the offsets."""
        dead = batch.undecodable + (batch.rejected.result() if batch.rejected else [])
        for record, error in dead:
            self._dead_letter(record, error)
        self._commit_offsets(batch.batches)
        return batch.size

    def _handle_batch(self, items: list[_Item]) -> list[tuple[Any, Exception]]:
        """Handle ``items`` in one transaction; return the records the handler rejected."""
        topics = sorted({record.topic for record, _, _ in items})
        with self._tracer.start_as_current_span(
            f"{topics[0] if len(topics) == 1 else 'multiple'} process",
            kind=SpanKind.CONSUMER,
            record_exception=False,
            set_status_on_exception=False,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": topics[0] if len(topics) == 1 else "multiple",
                "messaging.consumer.group.name": self.group_id,
                "messaging.batch.message_count": len(items),
            },
        ) as span:
            if span.is_recording():
                self._link_producers(span, items)
            try:
                return self._handle_batch_with_retries(items, span)
            except _Retry:
                span.set_status(Status(StatusCode.ERROR, "transient failure, will retry"))
                raise
            except _BatchFailed as exc:
                log.warning(
                    "batch of %d events failed (%s); handling them one by one",
                    len(items), exc.__cause__,
                )
                span.set_status(Status(StatusCode.ERROR, "batch failed, handled one by one"))
                raise

    @staticmethod
    def _link_producers(span: trace.Span, items: list[_Item]) -> None:
        # Messaging conventions for a batch: a link to each record's producer context, up to
        # the SDK's default link limit (it would drop the rest); every event id stays on the
        # span as an attribute.
        span.set_attribute("idc.event_ids", [envelope.event_id for _, _, envelope in items])
        links = 0
        for _, _, envelope in items:
            if links == _MAX_LINKS:
                break
            if HEADER_TRACEPARENT not in envelope.headers:
                continue
            producer = trace.get_current_span(
                extract_trace_context(envelope.headers)
            ).get_span_context()
            if producer.is_valid:
                span.add_link(producer, {"messaging.message.id": envelope.event_id})
                links += 1

    def _handle_batch_with_retries(
        self, items: list[_Item], span: trace.Span
    ) -> list[tuple[Any, Exception]]:
        rejected: list[tuple[Any, Exception]] = []
        delay = self._retry_backoff_s
        attempt = 0
        while items:
            try:
                self._handle_batch_in_transaction(items)
                break
            except _Rejected as exc:
                gone = {id(item) for item, _ in exc.items}
                items = [item for item in items if id(item) not in gone]
                for (record, _, envelope), error in exc.items:
                    log.warning(
                        "handler rejected %s %s (%s[%d]@%d): dead-lettering: %s",
                        envelope.event_type, envelope.event_id,
                        record.topic, record.partition, record.offset, error,
                    )
                    span.record_exception(error, {"messaging.message.id": envelope.event_id})
                    rejected.append((record, error))
            except Exception as exc:
                if not is_transient(exc):
                    raise _BatchFailed(str(exc)) from exc
                if attempt == self._transient_retries:
                    log.warning("transient failure on a batch, retries exhausted: %s", exc)
                    raise _Retry from exc
                log.info("transient failure on a batch, retrying: %s", exc)
                time.sleep(delay)
                delay *= 2
                attempt += 1
        return rejected

    def _handle_batch_in_transaction(self, items: list[_Item]) -> None:
        unique: dict[str, _Item] = {}
        for item in items:
            unique.setdefault(item[2].event_id, item)
        with self._session_factory() as session, session.begin():
            new = self._insert_inbox_rows(session, [envelope for _, _, envelope in unique.values()])
            fresh = [item for event_id, item in unique.items() if event_id in new]
            if not fresh:
                return
            try:
                self._batch_handler(session, [(event, envelope) for _, event, envelope in fresh])
            except RejectedItems as exc:
                if not exc.errors or not all(0 <= i < len(fresh) for i in exc.errors):
                    raise ValueError(
                        f"RejectedItems names no item of the batch: {exc.errors}"
                    ) from exc
                raise _Rejected(
                    [(fresh[i], error) for i, error in sorted(exc.errors.items())]
                ) from exc

    def _insert_inbox_rows(self, session: Session, envelopes: list[Envelope]) -> set[str]:
        """Insert the inbox rows not there yet; return the event ids inserted."""
        rows = [
            {
                "event_id": envelope.event_id,
                "event_type": envelope.event_type,
                "topic": envelope.topic,
                "partition": envelope.partition,
                "offset": envelope.offset,
            }
            for envelope in envelopes
        ]
        # A conflicting row was handled before, or is being handled by another member of
        # the group right now (PostgreSQL waits for that transaction to end).
        inserted = insert_new(
            session, inbox_table, rows, ["consumer_group", "event_id"], ["event_id"],
            same={"consumer_group": self.group_id, "processed_at": utcnow()},
        )
        return {event_id for (event_id,) in inserted}

    def _commit_offsets(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        assigned = self._consumer.assignment()
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "", _leader_epoch(records[-1]))
            for tp, records in batches.items()
            if tp in assigned
        }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except CommitFailedError:
            # The partitions moved to another member, which will see the records again;
            # the inbox turns that into a no-op.
            log.warning("offset commit of %d partition(s) failed after a rebalance", len(offsets))


def _leader_epoch(record: Any) -> int:
    epoch = getattr(record, "leader_epoch", None)
    return -1 if epoch is None else int(epoch)
