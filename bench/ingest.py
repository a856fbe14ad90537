"""Workload 3: usage ingest. UsageSample events already on the topic are consumed,
deduplicated and stored in PostgreSQL by the billing service's ingest process
(``IDC_BILLING_ROLE=ingest``: the usage ingest without the API, so it has a GIL of its own);
the floor is kafka-python consuming the same records and doing nothing with them.

Two runs: the samples of a busy month's first days (the ingest row), then the catch-up
after an outage: a day of both ends' samples of N circuits (288 intervals x 2 ends; 26,000
circuits make the 15 million samples of a full day) waiting on the topic when the ingest
starts, with the time a full day would take at the rate measured.

Both rates are taken from the first record seen to the last, so the consumer group join
(about a second on Tansu) is left out of both: the floor from the end of its first poll, the
product from its first inbox row (written right after its first poll is decoded, before
that batch's transaction) to the moment every record is handled (the count of stored
samples, or of the group's inbox rows for the catch-up: its two ends' samples of one
interval are one row or two depending on whether the usage key has the side).

Each run also reports the CPU time per sample: the ingest processes' own, and that of the
PostgreSQL backends serving them (their database's connections in pg_stat_activity; the
server's shared writers are left out), against the floor's, so the ratio can be read against
what the machine's cores allow: on C cores the ingest cannot exceed C x floor CPU / (ingest +
backends CPU) of the floor's rate. ``processes`` ingest processes (``--ingest-processes``)
share the topic's partitions as members of one consumer group; they start together, but
the first to serve may take a short run's records before the others join, so with more than
one process only the catch-up's figures mean much.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from bench.harness import Results, Row, at_least, judged, memory_row
from bench.stack import postgres_database, running_services
from devstack.services import ServiceProcess
from idc.events.v1 import usage_pb2
from idc.type.v1 import side_pb2
from services.billing.ingest import USAGE_GROUP
from services.billing.tables import UsageSampleRow
from services.common import db
from services.common.events import InboxRow, encode_event
from services.common.events.topics import USAGE_SAMPLES, dead_letter_topic, ensure_topics

PARTITIONS = 3
MONTH_START = datetime(2026, 1, 1, tzinfo=UTC)
CATCHUP_DAY = datetime(2026, 1, 15, tzinfo=UTC)
INTERVALS_PER_DAY = 288
FULL_DAY_SAMPLES = 15_000_000  # 26,000 circuits x 288 intervals x 2 ends, rounded
ENDS = ((side_pb2.SIDE_SINGAPORE, "sg-edge-1"), (side_pb2.SIDE_CHONGQING, "cq-edge-1"))
PARTITION_LIST = [TopicPartition(USAGE_SAMPLES, p) for p in range(PARTITIONS)]
# The usage ingest alone, as a deployment that must catch up runs it.
INGEST_ROLE = {"IDC_BILLING_ROLE": "ingest"}


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def _sample(
    index: int, circuit: str, start: datetime,
    side: side_pb2.Side.ValueType = side_pb2.SIDE_SINGAPORE,
    router: str = "sg-edge-1",
) -> usage_pb2.UsageSample:
    return usage_pb2.UsageSample(
        event_id=str(uuid.uuid4()), circuit_id=circuit, tenant_id="bench-tenant",
        interval_start_time=stamp(start), interval_seconds=300,
        bytes_in=1_000_000 + index, bytes_out=2_000_000 + index,
        router_name=router, side=side, interface_name="xe-0/0/1.100",
        read_time=stamp(start + timedelta(minutes=5)), valid=True,
    )


def _produce(bootstrap: str, samples: Iterable[usage_pb2.UsageSample]) -> None:
    ensure_topics(bootstrap, [USAGE_SAMPLES, dead_letter_topic(USAGE_SAMPLES)], PARTITIONS, 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=65536)
    try:
        for sample in samples:
            encoded = encode_event(sample, sample.circuit_id)
            producer.send(USAGE_SAMPLES, key=encoded.key, value=encoded.payload,
                          headers=encoded.headers)
        producer.flush()
    finally:
        producer.close()


def produce_samples(bootstrap: str, count: int, circuits: int = 200) -> None:
    _produce(bootstrap, (
        _sample(index, f"CKT-BENCH-{index % circuits:05d}",
                MONTH_START + timedelta(minutes=5 * (index // circuits)))
        for index in range(count)
    ))


def produce_day(bootstrap: str, circuits: int) -> int:
    """A day of both ends' samples of ``circuits`` circuits, interval after interval as a
    meter that comes back sends its backlog; returns how many."""

    def samples() -> Iterator[usage_pb2.UsageSample]:
        for interval in range(INTERVALS_PER_DAY):
            start = CATCHUP_DAY + timedelta(minutes=5 * interval)
            for number in range(circuits):
                # Both ends count the same traffic: on a key without the side the second
                # end is an identical duplicate, with it a row of its own.
                for side, router in ENDS:
                    yield _sample(interval, f"CKT-DAY-{number:05d}", start, side, router)

    _produce(bootstrap, samples())
    return INTERVALS_PER_DAY * circuits * len(ENDS)


def end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        return dict(consumer.end_offsets(PARTITION_LIST))
    finally:
        consumer.close()


@dataclass(frozen=True)
class Rate:
    """Records per second from the first to the last, and the CPU time they took."""

    per_s: float
    cpu_us: float  # the reading process's CPU per record (the floor, the ingest processes)
    backends_cpu_us: float = 0.0  # PostgreSQL's backends, per record (the ingest only)


def raw_consume_rate(
    bootstrap: str, count: int, start: Mapping[TopicPartition, int] | None = None
) -> Rate:
    """kafka-python reading ``count`` records from ``start`` (default: the beginning)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, fetch_max_wait_ms=10)
    try:
        consumer.assign(PARTITION_LIST)
        if start is None:
            consumer.seek_to_beginning(*PARTITION_LIST)
        else:
            for partition, offset in start.items():
                consumer.seek(partition, offset)
        seen = 0
        first = first_cpu = 0.0
        while seen < count:
            for records in consumer.poll(timeout_ms=500).values():
                if not seen:
                    first, first_cpu = time.perf_counter(), time.process_time()
                seen += len(records)
        # The first poll's records count as arriving at its end, like the product's.
        return Rate(
            (count - 1) / max(time.perf_counter() - first, 1e-9),
            (time.process_time() - first_cpu) / max(count - 1, 1) * 1e6,
        )
    finally:
        consumer.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pids(session: Session) -> list[int]:
    return list(session.scalars(text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )))


def _ingest_rate(
    factory: sessionmaker[Session], services: Sequence[ServiceProcess], count: int,
    handled: Callable[[Session], int], poll_s: float,
) -> Rate:
    """Wait until ``handled`` reaches ``count``; the rate from the group's first inbox row,
    the CPU per record from the moment the ingest processes serve (their start-up, imports
    and migrations, left out) and over the whole life of the database's backends."""
    started_cpu = sum(cpu_seconds(service.proc.pid) for service in services)
    deadline = time.monotonic() + max(120.0, count / 20)
    backends: set[int] = set()
    while True:
        with factory() as session:
            now_count = handled(session)
            backends.update(_backend_pids(session))
        if now_count >= count:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"ingest handled {now_count} of {count} samples")
        time.sleep(poll_s)
    done = datetime.now(UTC)
    ingest_cpu = sum(cpu_seconds(service.proc.pid) for service in services) - started_cpu
    backends_cpu = sum(cpu_seconds(pid) for pid in backends)
    with factory() as session:
        first = session.scalar(
            select(func.min(InboxRow.processed_at)).where(InboxRow.consumer_group == USAGE_GROUP)
        )
    assert first is not None
    return Rate(
        (count - 1) / max((done - first).total_seconds(), 1e-9),
        ingest_cpu / count * 1e6, backends_cpu / count * 1e6,
    )


def cpu_rows(workload: str, rate: Rate, floor: Rate) -> list[Row]:
    return [
        Row(workload, "CPU per sample, ingest processes", "us", rate.cpu_us, floor.cpu_us),
        Row(workload, "CPU per sample, PostgreSQL backends", "us", rate.backends_cpu_us,
            floor.cpu_us),
    ]


def _stored(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(UsageSampleRow)) or 0


def _inbox(session: Session) -> int:
    return session.scalar(
        select(func.count()).select_from(InboxRow).where(InboxRow.consumer_group == USAGE_GROUP)
    ) or 0


def run(
    results: Results, workdir: Path, bootstrap: str, count: int, circuits: int,
    processes: int = 1,
) -> None:
    produce_samples(bootstrap, count)
    floor = raw_consume_rate(bootstrap, count)
    with postgres_database("ingest") as url, ExitStack() as stack:
        factory = db.make_session_factory(db.make_engine(url))
        services = _start_ingest(stack, workdir, bootstrap, url, processes, "billing-ingest")
        rate = _ingest_rate(factory, services, count, _stored, 0.02)
        workload = f"ingest {count} samples"
        results.add(judged(
            Row(workload, "stored in PostgreSQL", "samples/s", rate.per_s, floor.per_s),
            at_least(0.5), ">= 50% of raw consume",
        ))
        for row in cpu_rows(workload, rate, floor):
            results.add(row)
        results.add(memory_row("ingest", services[0]))
    catch_up(results, workdir, bootstrap, circuits, processes)


def _start_ingest(
    stack: ExitStack, workdir: Path, bootstrap: str, url: str, processes: int, label: str
) -> list[ServiceProcess]:
    env = {"IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_BILLING_DATABASE_URL": url, **INGEST_ROLE}
    labels = [f"{label}-{n}" for n in range(processes)]
    return stack.enter_context(running_services("billing", workdir, env, labels))


def catch_up(
    results: Results, workdir: Path, bootstrap: str, circuits: int, processes: int = 1
) -> None:
    """A day's backlog: the ingest group resumes at its committed offsets, which are where
    the day's samples start, into a database of its own."""
    start = end_offsets(bootstrap)
    total = produce_day(bootstrap, circuits)
    floor = raw_consume_rate(bootstrap, total, start)
    with postgres_database("catchup") as url, ExitStack() as stack:
        factory = db.make_session_factory(db.make_engine(url))
        services = _start_ingest(stack, workdir, bootstrap, url, processes, "billing-catchup")
        # Counting the inbox takes longer as it grows; the run takes longer still.
        rate = _ingest_rate(factory, services, total, _inbox, max(0.05, total / 2_000_000))
        workload = f"catch-up {circuits} circuits, a day at both ends ({total} samples)"
        results.add(Row(workload, "handled", "samples/s", rate.per_s, floor.per_s))
        results.add(Row(
            workload, "projected for 15 million samples", "min",
            FULL_DAY_SAMPLES / rate.per_s / 60, FULL_DAY_SAMPLES / floor.per_s / 60,
        ))
        for row in cpu_rows(workload, rate, floor):
            results.add(row)
        results.add(memory_row("catch-up", services[0]))
