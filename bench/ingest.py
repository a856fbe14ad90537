"""Workload 3: usage ingest. UsageSample events already on the topic are consumed,
deduplicated and stored in PostgreSQL by the billing service; the floor is kafka-python
consuming the same topic and doing nothing with the records.

Both rates are taken from the first record seen to the last, so the consumer group join
(about a second on Tansu) is left out of both: the floor from the end of its first poll, the
product from its first inbox row (written right after its first poll is decoded, before
that batch's transaction) to the moment the count of stored samples reaches the total.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from sqlalchemy import func, select

from bench.harness import Results, Row, at_least, judged, memory_row
from bench.stack import postgres_database, running_service
from idc.events.v1 import usage_pb2
from services.billing.ingest import USAGE_GROUP
from services.billing.tables import UsageSampleRow
from services.common import db
from services.common.events import InboxRow, encode_event
from services.common.events.topics import USAGE_SAMPLES, dead_letter_topic, ensure_topics

PARTITIONS = 3
MONTH_START = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def produce_samples(bootstrap: str, count: int, circuits: int = 200) -> None:
    ensure_topics(bootstrap, [USAGE_SAMPLES, dead_letter_topic(USAGE_SAMPLES)], PARTITIONS, 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=65536)
    try:
        for index in range(count):
            circuit = f"CKT-BENCH-{index % circuits:05d}"
            start = MONTH_START + timedelta(minutes=5 * (index // circuits))
            sample = usage_pb2.UsageSample(
                event_id=str(uuid.uuid4()), circuit_id=circuit, tenant_id="bench-tenant",
                interval_start_time=stamp(start), interval_seconds=300,
                bytes_in=1_000_000 + index, bytes_out=2_000_000 + index,
                router_name="sg-edge-1", interface_name="xe-0/0/1.100",
                read_time=stamp(start + timedelta(minutes=5)), valid=True,
            )
            encoded = encode_event(sample, circuit)
            producer.send(USAGE_SAMPLES, key=encoded.key, value=encoded.payload,
                          headers=encoded.headers)
        producer.flush()
    finally:
        producer.close()


def raw_consume_rate(bootstrap: str, count: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, fetch_max_wait_ms=10)
    try:
        partitions = [TopicPartition(USAGE_SAMPLES, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen = 0
        first = 0.0
        while seen < count:
            for records in consumer.poll(timeout_ms=500).values():
                if not seen:
                    first = time.perf_counter()
                seen += len(records)
        # The first poll's records count as arriving at its end, like the product's.
        return (count - 1) / max(time.perf_counter() - first, 1e-9)
    finally:
        consumer.close()


def run(results: Results, workdir: Path, bootstrap: str, count: int) -> None:
    produce_samples(bootstrap, count)
    floor = raw_consume_rate(bootstrap, count)
    with postgres_database("ingest") as url:
        factory = db.make_session_factory(db.make_engine(url))

        def stored() -> int:
            with factory() as session:
                return session.scalar(select(func.count()).select_from(UsageSampleRow)) or 0

        env = {"IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_BILLING_DATABASE_URL": url}
        with running_service("billing", workdir, env, label="billing-ingest") as service:
            deadline = time.monotonic() + max(120.0, count / 20)
            while (now_count := stored()) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ingest stored {now_count} of {count} samples")
                time.sleep(0.02)
            done = datetime.now(UTC)
            with factory() as session:
                first = session.scalar(
                    select(func.min(InboxRow.processed_at))
                    .where(InboxRow.consumer_group == USAGE_GROUP)
                )
            assert first is not None
            rate = (count - 1) / max((done - first).total_seconds(), 1e-9)
            results.add(judged(
                Row(f"ingest {count} samples", "stored in PostgreSQL", "samples/s", rate, floor),
                at_least(0.5), ">= 50% of raw consume",
            ))
            results.add(memory_row("ingest", service))
