"""Usage and contract events through the real broker into the billing database."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import provisioning_pb2
from services.billing.ingest import CONTRACTS_GROUP, contracts_consumer, usage_consumer
from services.billing.tables import CircuitChangeRow, UsageConflictRow, UsageSampleRow
from services.common.config import KafkaSettings
from services.common.events import EventConsumer, InboxRow
from services.common.events.topics import dead_letter_topic, ensure_topics
from tests.fixtures.kafka import unique_name
from tests.integration.billing.support import (
    Clock,
    activated,
    migrated,
    modified,
    price,
    publish,
    sample,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 2, tzinfo=UTC)


def fresh_topic(request: pytest.FixtureRequest, settings: KafkaSettings, prefix: str) -> str:
    name = unique_name(request, prefix)
    ensure_topics(
        settings.bootstrap, [name, dead_letter_topic(name)], settings.topic_partitions,
        settings.replication_factor,
    )
    return name


def consume_until(
    consumer: EventConsumer, done: Callable[[], bool], timeout_s: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("the consumer did not store the expected rows in time")
        consumer.poll_once(0.2)


def count(factory: sessionmaker[Session], query: object) -> int:
    with factory() as session:
        return int(session.scalar(query) or 0)  # type: ignore[call-overload]


def test_samples_are_stored_once_per_interval(
    request: pytest.FixtureRequest, database_url: str, kafka_settings: KafkaSettings
) -> None:
    factory = migrated(database_url)
    topic = fresh_topic(request, kafka_settings, "usage")
    clock = Clock(datetime(2025, 3, 2, 1, tzinfo=UTC))
    first = sample("c-1", "acme-sg", T0, 1000, 2000)
    later = sample("c-1", "acme-sg", T0 + timedelta(minutes=5), 3000, 4000)
    same_again = sample("c-1", "acme-sg", T0, 1000, 2000)  # another event id, same values
    different = sample("c-1", "acme-sg", T0, 9999, 2000)  # same interval, other bytes
    reset = sample("c-1", "acme-sg", T0 + timedelta(minutes=10), 10**12, 10**12, valid=False)
    publish(
        kafka_settings, topic,
        [
            (later, None),  # out of order: the later interval first
            (first, None),
            (first, None),  # redelivered: same event id
            (same_again, None),
            (different, None),
            (reset, None),
        ],
    )
    with usage_consumer(factory, kafka_settings, topic=topic, clock=clock) as consumer:
        consume_until(
            consumer,
            lambda: count(factory, select(func.count()).select_from(InboxRow)) == 5,
        )
    with factory() as session:
        rows = session.scalars(
            select(UsageSampleRow).order_by(UsageSampleRow.interval_start)
        ).all()
        conflicts = session.scalars(select(UsageConflictRow)).all()
    assert [(r.interval_start, r.bytes_in, r.bytes_out, r.valid) for r in rows] == [
        (T0, 1000, 2000, True),
        (T0 + timedelta(minutes=5), 3000, 4000, True),
        (T0 + timedelta(minutes=10), 10**12, 10**12, False),  # kept as evidence
    ]
    assert all(r.received_at == clock.now for r in rows)
    assert [(c.event_id, c.kept_event_id, c.bytes_in) for c in conflicts] == [
        (different.event_id, first.event_id, 9999)
    ]


def test_contract_events_are_kept_and_other_types_ignored(
    request: pytest.FixtureRequest, database_url: str, kafka_settings: KafkaSettings
) -> None:
    factory = migrated(database_url)
    topic = fresh_topic(request, kafka_settings, "circuits")
    clock = Clock(datetime(2025, 3, 25, tzinfo=UTC))
    terms = price("SGD", "1000.00", "500.00", "12.50")
    activation = activated("c-1", "acme-sg", T0, 200, terms)
    upgrade = modified("c-1", "acme-sg", T0 + timedelta(days=10), 500, terms)
    planned = provisioning_pb2.ProvisioningPlanned(
        event_id="planned-1", order_id="o-1", circuit_id="c-1"
    )
    publish(
        kafka_settings, topic,
        [(upgrade, None), (planned, None), (activation, None), (activation, None)],
    )
    with contracts_consumer(factory, kafka_settings, topic=topic, clock=clock) as consumer:
        consume_until(
            consumer,
            lambda: count(factory, select(func.count()).select_from(InboxRow)) == 3,
        )
    with factory() as session:
        changes = session.scalars(
            select(CircuitChangeRow).order_by(CircuitChangeRow.effective_time)
        ).all()
        handled = set(
            session.scalars(
                select(InboxRow.event_id).where(InboxRow.consumer_group == CONTRACTS_GROUP)
            ).all()
        )
    assert [(c.kind, c.bandwidth_mbps, c.mrc, c.currency) for c in changes] == [
        ("activated", 200, "1000.00", "SGD"),
        ("modified", 500, "1000.00", "SGD"),
    ]
    # ProvisioningPlanned was acknowledged (in the inbox), not dead-lettered.
    assert "planned-1" in handled
