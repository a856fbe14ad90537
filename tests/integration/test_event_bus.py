"""Acceptance tests of the event bus against a real broker and real databases.

Run with ``-p tests.fixtures.kafka``. The event is ``idc.events.v1.OrderApproved``; another
message class works by changing ``EVENT_CLASS``, ``make_event`` and ``event_text`` only.
"""

from __future__ import annotations

import os
import select as fd_select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from idc.events.v1.order_pb2 import OrderApproved
from services.common.config import KafkaSettings
from services.common.db import transaction
from services.common.events import outbox
from services.common.events.consumer import HEADER_DLQ_ERROR, EventConsumer
from services.common.events.envelope import (
    HEADER_TRACEPARENT,
    Envelope,
    EventRegistry,
    encode_event,
    headers_dict,
)
from services.common.events.relay import OutboxRelay
from services.common.events.tables import (
    InboxRow,
    OutboxRow,
    create_event_tables,
    drop_event_tables,
)
from services.common.events.topics import dead_letter_topic
from tests.fixtures.kafka import EventDB

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20.0

# --- the event used by these tests: a real contract message ------------------------------

EVENT_CLASS: type[Message] = OrderApproved


def make_event(text: str) -> Message:
    # The order id carries the test's marker text; the event id is filled in by the outbox.
    return OrderApproved(order_id=text)


def event_text(event: Message) -> str:
    assert isinstance(event, OrderApproved)
    return event.order_id


REGISTRY = EventRegistry([EVENT_CLASS])

# --- a table the handlers write their effect into, in the handler's session ----------------

effects_metadata = MetaData()
effects = Table(
    "test_effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("text", String(200), nullable=False),
    Column("trace_id", String(32), nullable=False),
)


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the bus catches it."""


@dataclass
class Recorder:
    """A handler that writes one effect row per call; can fail on chosen texts."""

    fail_with: dict[str, Callable[[], BaseException]] = field(default_factory=dict)
    calls: list[tuple[str, Envelope]] = field(default_factory=list)
    events: list[Message] = field(default_factory=list)

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        text = event_text(event)
        self.calls.append((text, envelope))
        self.events.append(event)
        span_context = trace.get_current_span().get_span_context()
        session.execute(
            insert(effects).values(
                event_id=envelope.event_id,
                text=text,
                trace_id=format_trace_id(span_context.trace_id),
            )
        )
        make_error = self.fail_with.pop(text, None)
        if make_error is not None:
            raise make_error()


@pytest.fixture
def db(event_db: EventDB) -> EventDB:
    effects_metadata.create_all(event_db.engine)
    return event_db


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def group(request: pytest.FixtureRequest) -> str:
    return f"group-{request.node.name}-{time.monotonic_ns()}"


# --- helpers -----------------------------------------------------------------------------


def effect_rows(db: EventDB) -> list[tuple[str, str, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(effects.c.event_id, effects.c.text, effects.c.trace_id).order_by(effects.c.id)
        )
        return [(r.event_id, r.text, r.trace_id) for r in rows]


def count(db: EventDB, table: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def write_events(db: EventDB, topic: str, key: str, texts: list[str]) -> list[str]:
    with transaction(db.session_factory) as session:
        return [outbox.add(session, topic, key, make_event(t)).event_id for t in texts]


def relay_all(db: EventDB, settings: KafkaSettings, expected: int) -> None:
    with OutboxRelay(db.session_factory, settings) as relay:
        sent = 0
        deadline = time.monotonic() + WAIT_S
        while sent < expected and time.monotonic() < deadline:
            sent += relay.run_once()
        assert sent == expected


def new_consumer(
    db: EventDB,
    settings: KafkaSettings,
    topic: str,
    group: str,
    handler: Any,
    cls: type[EventConsumer] = EventConsumer,
    **kw: Any,
) -> EventConsumer:
    return cls([topic], group, handler, db.session_factory, settings, registry=REGISTRY, **kw)


def consume(consumer: EventConsumer, records: int, timeout: float = WAIT_S) -> int:
    """Poll until ``records`` records were consumed (handled, skipped or dead-lettered)."""
    done = 0
    deadline = time.monotonic() + timeout
    while done < records and time.monotonic() < deadline:
        done += consumer.poll_once(0.2)
    assert done >= records, f"consumed {done} of {records} records in {timeout} s"
    return done


def poll_until_raises(consumer: EventConsumer, exc: type[BaseException]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            consumer.poll_once(0.2)
        except exc:
            return
    pytest.fail(f"{exc.__name__} was not raised within {WAIT_S} s")


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = WAIT_S) -> list[Any]:
    """Every record on ``topic`` from the start (without a group), at least ``expected``."""
    reader = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        reader.assign(partitions)
        reader.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in reader.poll(timeout_ms=100).values():
                records.extend(batch)
        # end_offsets() is unreliable on Tansu, so look a moment longer for extra records.
        for batch in reader.poll(timeout_ms=200).values():
            records.extend(batch)
        return records
    finally:
        reader.close()


def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        offset = probe.committed(tp)
        return None if offset is None else int(offset)
    finally:
        probe.close(autocommit=False)


# --- a: outbox -> relay -> consumer, trace continues ---------------------------------------


def test_outbox_event_reaches_consumer_with_its_trace(
    db: EventDB,
    kafka_settings: KafkaSettings,
    topic: str,
    group: str,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = tracing
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("approve order") as producer_span:
        [event_id] = write_events(db, topic, "circuit-a", ["approved"])
    producer_ctx = producer_span.get_span_context()

    started = time.monotonic()
    relay_all(db, kafka_settings, 1)
    recorder = Recorder()
    with new_consumer(
        db, kafka_settings, topic, group, recorder, tracer_provider=provider
    ) as consumer:
        consume(consumer, 1)
    latency = time.monotonic() - started

    [(text, envelope)] = recorder.calls
    assert text == "approved"
    assert envelope.event_id == event_id
    assert getattr(recorder.events[0], "event_id", event_id) == event_id  # header == payload
    assert envelope.event_type == "idc.events.v1.OrderApproved"
    assert envelope.schema_version == "1"
    assert envelope.key == b"circuit-a"
    assert envelope.traceparent is not None
    assert envelope.traceparent.startswith(f"00-{format_trace_id(producer_ctx.trace_id)}-")
    assert effect_rows(db) == [(event_id, "approved", format_trace_id(producer_ctx.trace_id))]
    [consumer_span] = [s for s in exporter.get_finished_spans() if s.name.endswith(" process")]
    assert consumer_span.context is not None
    assert consumer_span.context.trace_id == producer_ctx.trace_id
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == producer_ctx.span_id
    assert consumer_span.kind is trace.SpanKind.CONSUMER
    with db.session_factory() as session:
        row = session.scalars(select(OutboxRow)).one()
        assert row.sent_at is not None
        assert HEADER_TRACEPARENT in row.headers
        assert session.scalars(select(InboxRow.event_id)).all() == [event_id]
    print(f"outbox -> consumer incl. group join: {latency:.2f} s")


# --- b: relay killed between publish and mark ------------------------------------------

PAUSING_RELAY = textwrap.dedent(
    """
    import sys, time
    from services.common.config import KafkaSettings
    from services.common.db import make_engine, make_session_factory
    from services.common.events.relay import OutboxRelay

    class PauseBeforeMark(OutboxRelay):
        def _mark_sent(self, session, rows):
            print("published", len(list(rows)), flush=True)
            time.sleep(600)

    relay = PauseBeforeMark(
        make_session_factory(make_engine(sys.argv[1])), KafkaSettings(bootstrap=sys.argv[2])
    )
    relay.run_once()
    """
)


def run_relay_and_kill_after_publish(db: EventDB, bootstrap: str) -> None:
    """Run a relay in a child process and SIGKILL it once the broker acknowledged the batch
    and before the rows are marked sent."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSING_RELAY, db.url, bootstrap],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready, _, _ = fd_select.select([proc.stdout], [], [], WAIT_S)
        line = proc.stdout.readline().decode() if ready else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert line.startswith("published 1"), f"relay did not publish: {proc.stderr.read()!r}"


def test_relay_killed_after_publish_redelivers_and_inbox_absorbs_it(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    [event_id] = write_events(db, topic, "circuit-b", ["once"])
    run_relay_and_kill_after_publish(db, kafka_settings.bootstrap)
    with db.session_factory() as session:
        assert session.scalars(select(OutboxRow.sent_at)).one() is None

    # On PostgreSQL the dead relay's row lock goes with its connection: a new relay may need
    # a moment before the row is claimable again.
    relay_all(db, kafka_settings, 1)
    copies = [
        r
        for r in read_topic(kafka_settings.bootstrap, topic, 2)
        if headers_dict(r.headers).get("event-id") == event_id.encode()
    ]
    assert len(copies) == 2

    recorder = Recorder()
    with new_consumer(db, kafka_settings, topic, group, recorder) as consumer:
        consume(consumer, 2)
    assert [t for t, _ in recorder.calls] == ["once"]
    assert effect_rows(db)[0][:2] == (event_id, "once")
    assert count(db, effects) == 1
    assert count(db, InboxRow.__table__) == 1


# --- c: consumer crashes before committing its offset, or inside the handler --------------


class CrashBeforeOffsetCommit(EventConsumer):
    def _commit_offset(self, record: Any) -> None:
        raise SimulatedCrash("after the database commit, before the offset commit")


def test_consumer_crash_before_offset_commit_redelivers_once(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    [event_id] = write_events(db, topic, "circuit-c", ["effect"])
    relay_all(db, kafka_settings, 1)
    [published] = read_topic(kafka_settings.bootstrap, topic, 1)
    tp = TopicPartition(topic, published.partition)

    first = new_consumer(db, kafka_settings, topic, group, Recorder(), CrashBeforeOffsetCommit)
    try:
        poll_until_raises(first, SimulatedCrash)
    finally:
        first.close()
    assert count(db, effects) == 1  # the database transaction committed

    recorder = Recorder()
    with new_consumer(db, kafka_settings, topic, group, recorder) as second:
        consume(second, 1)
    assert recorder.calls == []  # the redelivery was absorbed by the inbox
    assert count(db, effects) == 1
    assert effect_rows(db)[0][0] == event_id
    assert committed_offset(kafka_settings.bootstrap, group, tp) == published.offset + 1


def test_handler_crash_before_db_commit_takes_effect_once_after_restart(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    write_events(db, topic, "circuit-c2", ["effect"])
    relay_all(db, kafka_settings, 1)

    crashing = Recorder(fail_with={"effect": lambda: SimulatedCrash("inside the handler")})
    first = new_consumer(db, kafka_settings, topic, group, crashing)
    try:
        poll_until_raises(first, SimulatedCrash)
    finally:
        first.close()
    assert count(db, effects) == 0  # rolled back with the inbox row
    assert count(db, InboxRow.__table__) == 0

    recorder = Recorder()
    with new_consumer(db, kafka_settings, topic, group, recorder) as second:
        consume(second, 1)
    assert [t for t, _ in recorder.calls] == ["effect"]
    assert count(db, effects) == 1


# --- d: poison messages go to the dead-letter topic; the partition moves on ----------------


def test_poison_messages_are_dead_lettered_and_the_partition_moves_on(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    good = encode_event(make_event("ok"), b"circuit-d")
    unknown = encode_event(wrappers_pb2.Int64Value(value=1), b"circuit-d")
    failing = encode_event(make_event("boom"), b"circuit-d")
    poison: list[tuple[bytes, list[tuple[str, bytes]], str]] = [
        (b"\xde\xad\xbe\xef", unknown.headers, "UnknownEventTypeError"),
        (b"\x0a\xff", encode_event(make_event("x"), b"").headers, "BadPayloadError"),
        (b"no headers at all", [], "MissingHeaderError"),
        (failing.payload, failing.headers, "ValueError"),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap, acks="all")
    try:
        offsets = [
            producer.send(topic, key=b"circuit-d", value=value, headers=headers)
            .get(timeout=10)
            .offset
            for value, headers, _ in poison
        ]
        last = producer.send(topic, key=b"circuit-d", value=good.payload, headers=good.headers)
        last_meta = last.get(timeout=10)
    finally:
        producer.close()

    recorder = Recorder(fail_with={"boom": lambda: ValueError("cannot price circuit")})
    with new_consumer(db, kafka_settings, topic, group, recorder) as consumer:
        consume(consumer, len(poison) + 1)

    assert [t for t, _ in recorder.calls] == ["boom", "ok"]
    assert [text for _, text, _ in effect_rows(db)] == ["ok"]  # the failed handler rolled back
    tp = TopicPartition(topic, last_meta.partition)
    assert committed_offset(kafka_settings.bootstrap, group, tp) == last_meta.offset + 1

    dead = read_topic(kafka_settings.bootstrap, dead_letter_topic(topic), len(poison))
    assert len(dead) == len(poison)
    by_offset = {int(headers_dict(r.headers)["dlq-original-offset"]): r for r in dead}
    assert sorted(by_offset) == offsets
    for offset, (value, _, error_type) in zip(offsets, poison, strict=True):
        record = by_offset[offset]
        headers = headers_dict(record.headers)
        assert record.key == b"circuit-d"
        assert record.value == value
        assert headers["dlq-error-type"].decode() == error_type
        assert headers[HEADER_DLQ_ERROR]
        assert headers["dlq-original-topic"].decode() == topic
        assert headers["dlq-original-partition"].decode() == str(last_meta.partition)
        assert headers["dlq-consumer-group"].decode() == group
    assert b"cannot price circuit" in headers_dict(by_offset[offsets[3]].headers)[HEADER_DLQ_ERROR]
    # The original headers travel with the dead letter.
    assert headers_dict(by_offset[offsets[3]].headers)["event-id"] == failing.event_id.encode()


def test_transient_handler_errors_are_retried_not_dead_lettered(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    write_events(db, topic, "circuit-t", ["flaky"])
    relay_all(db, kafka_settings, 1)
    attempts: list[int] = []

    def flaky(session: Session, event: Message, envelope: Envelope) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        Recorder()(session, event, envelope)

    with new_consumer(
        db, kafka_settings, topic, group, flaky, transient_retries=3, retry_backoff_s=0.01
    ) as consumer:
        consume(consumer, 1)
    assert len(attempts) == 3
    assert count(db, effects) == 1
    assert read_topic(kafka_settings.bootstrap, dead_letter_topic(topic), 0, timeout=0.2) == []


# --- relay ordering and table helpers ---------------------------------------------------


def test_concurrent_relays_publish_each_row_once_in_key_order(
    db: EventDB, kafka_settings: KafkaSettings, topic: str
) -> None:
    if db.backend != "postgresql":
        pytest.skip("SQLite has one writer: run one relay per SQLite database")
    keys = [f"circuit-{n}" for n in range(5)]
    with transaction(db.session_factory) as session:
        for seq in range(60):
            for key in keys:
                outbox.add(session, topic, key, make_event(f"{key}:{seq:03d}"))
    total = 60 * len(keys)

    def relay_until_empty() -> None:
        with OutboxRelay(db.session_factory, kafka_settings, batch_size=25) as relay:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                if relay.run_once() == 0 and count(db, outbox_unsent()) == 0:
                    return

    threads = [threading.Thread(target=relay_until_empty) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    records = read_topic(kafka_settings.bootstrap, topic, total)
    assert len(records) == total  # no row was published twice
    per_key: dict[str, list[str]] = {}
    for record in records:
        text = event_text(OrderApproved.FromString(record.value))
        per_key.setdefault(record.key.decode(), []).append(text)
    for key in keys:
        assert per_key[key] == sorted(per_key[key]), f"{key} out of order"
        assert len(per_key[key]) == 60


def outbox_unsent() -> Any:
    return select(OutboxRow.id).where(OutboxRow.sent_at.is_(None)).subquery()


def test_event_table_helpers_work_as_alembic_operations(db: EventDB) -> None:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    with db.engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        drop_event_tables(op)
        assert not {"outbox", "inbox"} & set(inspect(conn).get_table_names())
        create_event_tables(op)
        inspector = inspect(conn)
        assert {"outbox", "inbox"} <= set(inspector.get_table_names())
        assert {u["name"] for u in inspector.get_unique_constraints("inbox")} == {
            "uq_inbox_consumer_group_event_id"
        }
        assert "ix_outbox_unsent" in {i["name"] for i in inspector.get_indexes("outbox")}
    # The recreated tables work with the ORM classes.
    write_events(db, "t", "k", ["x"])
    assert count(db, OutboxRow.__table__) == 1
