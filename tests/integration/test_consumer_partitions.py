"""A consumer the broker leaves without partitions says so and recovers, on the real broker.

The reproduction (shared/DEVSTACK.md): with plain kafka-python a member joins the group,
polls 0.5 s and closes; on Tansu it stays the forming group's leader, and members joining
after it never get partitions. A plain kafka-python probe establishes that state first (no
partitions and no formed generation for PROBE_S, where a lone member of a healthy group forms
in about a second); the test is skipped, saying what the probe saw, only when the broker does
not wedge the group (Apache Kafka through IDC_KAFKA_BOOTSTRAP does not). Then the project's
consumer, per-record and batch, runs in that group inside a GrpcApp, and the test shows: the
alarm raised (monitor and gRPC health) and logged, the KafkaConsumer recreated, and each
record produced before and meanwhile handled exactly once, with the offsets the group had
committed before kept.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import MemberState
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.orm import Session

from idc.events.v1.order_pb2 import OrderApproved
from services.common.config import KafkaSettings, ServiceSettings
from services.common.events import BatchEventConsumer, EventConsumer, InboxRow
from services.common.events.envelope import Envelope, EventRegistry, encode_event
from services.common.grpc_server import GrpcApp
from services.common.runtime import ConsumerWorker
from tests.fixtures.kafka import EventDB
from tests.integration.test_event_bus import committed_offset

pytestmark = pytest.mark.integration

REGISTRY = EventRegistry([OrderApproved])
WORKER = "test-events"
ALARM = f"{WORKER}-unassigned"
BOUND_S = 6.0  # three of the fixtures' 2 s session timeouts
WAIT_S = 60.0
ATTEMPTS = 3

effects_metadata = MetaData()
effects = Table(
    "test_partition_effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("text", String(200), nullable=False),
)


def write_effects(session: Session, items: Sequence[tuple[Message, Envelope]]) -> None:
    rows = []
    for event, envelope in items:
        assert isinstance(event, OrderApproved)
        rows.append({"event_id": envelope.event_id, "text": event.order_id})
    session.execute(insert(effects), rows)


def per_record(db: EventDB, settings: KafkaSettings, topic: str, group: str) -> EventConsumer:
    def handle(session: Session, event: Message, envelope: Envelope) -> None:
        write_effects(session, [(event, envelope)])

    return EventConsumer([topic], group, handle, db.session_factory, settings, registry=REGISTRY)


def batch(db: EventDB, settings: KafkaSettings, topic: str, group: str) -> EventConsumer:
    return BatchEventConsumer(
        [topic], group, write_effects, db.session_factory, settings, registry=REGISTRY
    )


MakeConsumer = Callable[[EventDB, KafkaSettings, str, str], EventConsumer]


@pytest.fixture
def db(event_db: EventDB) -> EventDB:
    effects_metadata.create_all(event_db.engine)
    return event_db


@pytest.fixture
def group() -> str:
    return f"partitions-group-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(kafka_settings: KafkaSettings) -> KafkaSettings:
    return dataclasses.replace(kafka_settings, unassigned_alarm_s=BOUND_S)


def plain_member(settings: KafkaSettings, topic: str, group: str) -> KafkaConsumer:
    """A kafka-python group member with no product code around it."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap,
        group_id=group,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


def wedge(settings: KafkaSettings, topic: str, group: str) -> str | None:
    """Reproduce the stuck group and check it with a probe; None when the group is stuck,
    else what the probe saw."""
    leaver = plain_member(settings, topic, group)
    try:
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            leaver.poll(timeout_ms=100)
    finally:
        leaver.close(autocommit=False)
    probe_s = 5 * settings.session_timeout_ms / 1000
    probe = plain_member(settings, topic, group)
    try:
        start = time.monotonic()
        while time.monotonic() - start < probe_s:
            probe.poll(timeout_ms=100)
            if probe.assignment() or probe.group_metadata().state == MemberState.STABLE:
                return (
                    f"a probe member got {len(probe.assignment())} partition(s) and a formed "
                    f"generation after {time.monotonic() - start:.1f} s"
                )
        return None
    finally:
        probe.close(autocommit=False)


def produce(settings: KafkaSettings, topic: str, texts: list[str]) -> dict[int, int]:
    """Send one event per text; return the offset after the last record, by partition."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    try:
        futures = []
        for text in texts:
            encoded = encode_event(OrderApproved(order_id=text), text.encode())
            futures.append(producer.send(
                topic, key=text.encode(), value=encoded.payload, headers=encoded.headers
            ))
        producer.flush(timeout=WAIT_S)
        ends: dict[int, int] = {}
        for future in futures:
            meta = future.get(timeout=WAIT_S)
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        producer.close()


def effect_texts(db: EventDB) -> list[str]:
    with db.engine.connect() as conn:
        return sorted(conn.execute(select(effects.c.text)).scalars())


def inbox_count(db: EventDB) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(InboxRow.__table__)).scalar_one())


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


@pytest.fixture
def app_for(db: EventDB, settings: KafkaSettings) -> Iterator[Callable[[ConsumerWorker], GrpcApp]]:
    apps: list[GrpcApp] = []

    def start(worker: ConsumerWorker) -> GrpcApp:
        app = GrpcApp(
            settings=ServiceSettings(
                name="partitions-test", listen="127.0.0.1:0", database_url=db.url,
                kafka=settings, grace_period_s=1.0,
            ),
            register=lambda server: [],
            tokens=None,
            workers=[worker],
        )
        apps.append(app)
        app.start()
        return app

    yield start
    for app in apps:
        app.stop()


def health(app: GrpcApp, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        return status


# Each consumer on one engine (about 30 s a case): what is tested is the consumer's, and
# both engines are under both consumers in the event-bus tests.
@pytest.mark.parametrize(
    ("database_url", "make_consumer"),
    [("postgresql", per_record), ("sqlite", batch)],
    ids=["per-record-postgresql", "batch-sqlite"],
    indirect=["database_url"],
)
def test_a_consumer_left_without_partitions_reports_it_and_recovers(
    db: EventDB,
    settings: KafkaSettings,
    topic: str,
    group: str,
    make_consumer: MakeConsumer,
    app_for: Callable[[ConsumerWorker], GrpcApp],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services")
    # The group has done work before: its committed offsets must survive the recovery.
    ends = produce(settings, topic, ["before-1", "before-2", "before-3"])
    with make_consumer(db, settings, topic, group) as earlier:
        done = 0
        deadline = time.monotonic() + WAIT_S
        while done < 3 and time.monotonic() < deadline:
            done += earlier.poll_once(0.2)
        assert done == 3, f"the group handled {done} of its first 3 records"
    before = {p: committed_offset(settings.bootstrap, group, TopicPartition(topic, p))
              for p in range(3)}
    assert before == {p: ends.get(p) for p in range(3)}

    seen: list[str] = []
    while (outcome := wedge(settings, topic, group)) is not None:
        seen.append(outcome)
        if len(seen) == ATTEMPTS:
            pytest.skip(f"the broker did not leave the group stuck in {ATTEMPTS} tries: {seen}")

    ends = merge(ends, produce(settings, topic, ["stuck-1", "stuck-2", "stuck-3", "stuck-4"]))
    made: list[EventConsumer] = []

    def make() -> EventConsumer:
        made.append(make_consumer(db, settings, topic, group))
        return made[-1]

    app = app_for(ConsumerWorker(WORKER, make))
    assert app.monitor is not None
    monitor = app.monitor
    ends = merge(ends, produce(settings, topic, ["stuck-5", "stuck-6"]))

    wait_until("the unassigned alarm raised", lambda: ALARM in monitor.active_alarms())
    [text] = monitor.active_alarms()[ALARM]
    assert f"consumer group {group} on {topic}: no partitions assigned for" in text
    assert "consumer recreated 1 time(s)" in text
    assert health(app, f"idc.alarm.{ALARM}") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(app, "") == health_pb2.HealthCheckResponse.SERVING  # not a health check

    expected = sorted(
        ["before-1", "before-2", "before-3"] + [f"stuck-{i}" for i in range(1, 7)]
    )
    wait_until("every record handled", lambda: len(effect_texts(db)) >= len(expected))
    [consumer] = made  # one EventConsumer, its KafkaConsumer recreated inside it
    assert consumer.recreations >= 1
    assert consumer.assignment() == {TopicPartition(topic, p) for p in range(3)}
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "services.common.events.consumer" and r.levelno == logging.WARNING]
    assert any("no partitions assigned for" in m and "recreating the consumer" in m
               for m in warnings), warnings
    restored = sum(offset is not None for offset in before.values())
    assert any(f"the broker dropped the group's state; {restored} offset(s) restored" in m
               for m in warnings), warnings

    wait_until("the alarm cleared", lambda: ALARM not in monitor.active_alarms(), timeout=30)
    assert health(app, f"idc.alarm.{ALARM}") == health_pb2.HealthCheckResponse.SERVING
    ends = merge(ends, produce(settings, topic, ["after"]))
    wait_until("a record after recovery handled", lambda: "after" in effect_texts(db))

    assert effect_texts(db) == sorted([*expected, "after"])  # each exactly once
    assert inbox_count(db) == len(expected) + 1
    wait_until("every offset committed", lambda: all(
        committed_offset(settings.bootstrap, group, TopicPartition(topic, p)) == end
        for p, end in ends.items()
    ), timeout=10)


def merge(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {p: max(a.get(p, 0), b.get(p, 0)) for p in a.keys() | b.keys()}

