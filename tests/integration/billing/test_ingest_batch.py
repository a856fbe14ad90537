"""Usage samples through the real broker in batches: duplicates inside one batch behave like
duplicates across batches, bad input is dead-lettered without holding up the rest, and the
usage peaks count exactly the samples stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from kafka import KafkaProducer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import usage_pb2
from services.billing.ingest import usage_consumer
from services.billing.tables import UsageConflictRow, UsagePeakRow, UsageSampleRow
from services.common.config import KafkaSettings
from services.common.events import BatchEventConsumer, encode_event
from services.common.events.consumer import HEADER_DLQ_ERROR
from services.common.events.envelope import headers_dict
from services.common.events.topics import dead_letter_topic
from tests.integration.billing.support import Clock, migrated, sample
from tests.integration.billing.test_ingest import fresh_topic
from tests.integration.test_event_bus import read_topic

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 2, tzinfo=UTC)


def send_together(settings: KafkaSettings, topic: str, messages: list[Message]) -> list[int]:
    """One record batch (so one poll) of samples on one partition; return their offsets."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=60_000)
    try:
        futures = []
        for message in messages:
            encoded = encode_event(message, b"batch")
            futures.append(producer.send(
                topic, key=encoded.key, value=encoded.payload, headers=encoded.headers
            ))
        producer.flush(timeout=30)
        return [future.get(timeout=30).offset for future in futures]
    finally:
        producer.close()


def consume(consumer: BatchEventConsumer, records: int) -> None:
    done = 0
    deadline = time.monotonic() + 30
    while done < records and time.monotonic() < deadline:
        done += consumer.poll_once(0.2)
    assert done >= records, f"consumed {done} of {records} records"


def stored(factory: sessionmaker[Session]) -> list[tuple[str, datetime, int, str]]:
    with factory() as session:
        return [
            (r.circuit_id, r.interval_start, r.bytes_in, r.event_id)
            for r in session.scalars(
                select(UsageSampleRow).order_by(UsageSampleRow.circuit_id,
                                                UsageSampleRow.interval_start)
            )
        ]


def conflicts(factory: sessionmaker[Session]) -> list[tuple[str, str, int]]:
    with factory() as session:
        return [
            (c.event_id, c.kept_event_id, c.bytes_in)
            for c in session.scalars(select(UsageConflictRow).order_by(UsageConflictRow.id))
        ]


def peak_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {p.circuit_id: p.samples for p in session.scalars(select(UsagePeakRow))}


def test_duplicates_in_a_batch_and_across_batches_and_bad_input(
    request: pytest.FixtureRequest, database_url: str, kafka_settings: KafkaSettings
) -> None:
    factory = migrated(database_url)
    topic = fresh_topic(request, kafka_settings, "usage-batch")
    clock = Clock(datetime(2025, 3, 2, 1, tzinfo=UTC))
    first = sample("c-1", "acme-sg", T0, 1000, 2000)
    second = sample("c-1", "acme-sg", T0 + timedelta(minutes=5), 3000, 4000)
    same = sample("c-1", "acme-sg", T0, 1000, 2000)  # another event id, same values
    different = sample("c-1", "acme-sg", T0, 9999, 2000)  # same interval, other bytes
    invalid = sample("", "acme-sg", T0, 1, 1)  # no circuit: bad input
    other = sample("c-2", "acme-sg", T0, 500, 600)
    offsets = send_together(
        kafka_settings, topic, [first, second, same, different, invalid, other]
    )
    with usage_consumer(factory, kafka_settings, topic=topic, clock=clock) as consumer:
        consume(consumer, 6)
        assert stored(factory) == [
            ("c-1", T0, 1000, first.event_id),
            ("c-1", T0 + timedelta(minutes=5), 3000, second.event_id),
            ("c-2", T0, 500, other.event_id),
        ]
        assert conflicts(factory) == [(different.event_id, first.event_id, 9999)]
        assert peak_counts(factory) == {"c-1": 2, "c-2": 1}

        # The same cases across batches: an identical and a different report of stored
        # intervals, and a new interval.
        again = sample("c-1", "acme-sg", T0 + timedelta(minutes=5), 3000, 4000)
        changed = sample("c-2", "acme-sg", T0, 501, 600)
        later = sample("c-1", "acme-sg", T0 + timedelta(minutes=10), 10**12, 10**12)
        send_together(kafka_settings, topic, [again, changed, later])
        consume(consumer, 3)

    assert stored(factory) == [
        ("c-1", T0, 1000, first.event_id),
        ("c-1", T0 + timedelta(minutes=5), 3000, second.event_id),
        ("c-1", T0 + timedelta(minutes=10), 10**12, later.event_id),
        ("c-2", T0, 500, other.event_id),
    ]
    assert conflicts(factory) == [
        (different.event_id, first.event_id, 9999),
        (changed.event_id, other.event_id, 501),
    ]
    # Only stored samples count towards the peaks, each once.
    assert peak_counts(factory) == {"c-1": 3, "c-2": 1}

    [dead] = read_topic(kafka_settings.bootstrap, dead_letter_topic(topic), 1)
    headers = headers_dict(dead.headers)
    assert headers["dlq-original-offset"] == str(offsets[4]).encode()
    assert headers["dlq-error-type"] == b"InvalidArgument"
    assert b"circuit_id" in headers[HEADER_DLQ_ERROR]
    assert usage_pb2.UsageSample.FromString(dead.value).event_id == invalid.event_id
