"""Month-end runs from the kept usage peaks give the invoices a scan of the samples gives,
and fall back to the scan where the peaks cannot stand for the samples."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import usage_pb2
from services.billing.cycle import BillingCycle, CycleRequest, Progress, Summary
from services.billing.domain.peaks import KeptMonth
from services.billing.domain.percentile import Sample, nearest_rank_p95
from services.billing.domain.rating import BillingMonth
from services.billing.ingest import UsageIngest
from services.billing.peaks import kept_months, record_samples
from services.billing.store import SqlBillingStore
from services.billing.tables import UsagePeakRow
from services.common import db
from tests.integration.billing.support import (
    MIGRATIONS,
    Clock,
    activated,
    directory,
    envelope_for,
    ingest_directly,
    migrated,
    modified,
    price,
    sample,
)

pytestmark = pytest.mark.integration

MARCH = BillingMonth(2025, 3)
AFTER_MARCH = datetime(2025, 4, 2, tzinfo=UTC)
MBPS = 37_500_000  # bytes in 300 s at 1 Mbps
# (tenant, currency, zone): two configured customers and one the file does not list.
TENANTS = [
    ("acme-sg", "SGD", "Asia/Singapore"),
    ("acme-us", "USD", "America/Los_Angeles"),
    ("zz-unlisted", "SGD", "Asia/Singapore"),
]


class ScanningStore(SqlBillingStore):
    """The real store without the kept peaks: every circuit is rated from its samples."""

    def kept_months(self, month: BillingMonth) -> dict[str, list[KeptMonth]]:
        return {}


def run(cycle: BillingCycle, request: CycleRequest) -> Summary:
    messages = list(cycle.run(request))
    assert all(isinstance(m, Progress) for m in messages[:-1])
    assert isinstance(messages[-1], Summary)
    return messages[-1]


def usage(
    rng: random.Random, circuit: str, tenant: str, start: datetime, end: datetime, count: int
) -> list[usage_pb2.UsageSample]:
    """``count`` samples starting in [start, end): heavy ties, some invalid, some 600 s."""
    slots = int((end - start).total_seconds() // 300)
    messages = []
    for slot in sorted(rng.sample(range(slots), min(count, slots))):
        message = sample(
            circuit, tenant, start + timedelta(minutes=5 * slot),
            rng.choice((60, 90, 120, 250)) * MBPS, rng.choice((20, 130, 130, 300)) * MBPS,
            valid=rng.random() > 0.03,
        )
        if rng.random() < 0.1:
            message.interval_seconds = 600
        messages.append(message)
    return messages


def store_usage(
    factory: sessionmaker[Session], clock: Clock, rng: random.Random,
    arriving: Sequence[Message],
) -> None:
    """Through the usage consumer's batch handler, in batches of random size."""
    handler = UsageIngest(clock)
    messages = list(arriving)
    rng.shuffle(messages)
    while messages:
        size = rng.randint(1, 400)
        batch, messages = messages[:size], messages[size:]
        with db.transaction(factory) as session:
            handler.batch(session, [(m, envelope_for(m)) for m in batch])


def load_month(factory: sessionmaker[Session], clock: Clock, rng: random.Random) -> int:
    """Per tenant: a circuit active all month, one activated mid-month (usage from then
    on), one changed mid-month. Returns how many circuits a run must scan (the changed)."""
    contracts: list[Message] = []
    samples: list[Message] = []
    for tenant, currency, zone in TENANTS:
        start, end = MARCH.window(ZoneInfo(zone))
        terms = price(currency, "1000.00", "500.00", "7.35")
        bigger = price(currency, "1800.00", "500.00", "6.10")
        whole, late, changed = (f"{tenant}-{name}" for name in ("whole", "late", "changed"))
        middle = start + timedelta(days=11, hours=7)
        contracts += [
            activated(whole, tenant, start - timedelta(days=40), 100, terms),
            activated(late, tenant, middle, 100, terms),
            activated(changed, tenant, start - timedelta(days=40), 100, terms),
            modified(changed, tenant, middle + timedelta(days=3), 200, bigger),
        ]
        samples += usage(rng, whole, tenant, start - timedelta(hours=2), end + timedelta(hours=3),
                         3000)
        samples += usage(rng, late, tenant, middle, end, 1200)
        samples += usage(rng, changed, tenant, start, end, 2000)
    ingest_directly(factory, clock, contracts)
    store_usage(factory, clock, rng, samples)
    return len(TENANTS)


@pytest.fixture
def factory(database_url: str) -> sessionmaker[Session]:
    return migrated(database_url)


def test_a_run_from_the_peaks_writes_the_invoices_a_scan_writes(
    factory: sessionmaker[Session],
) -> None:
    clock = Clock(AFTER_MARCH - timedelta(hours=12))
    must_scan = load_month(factory, clock, random.Random(5))
    clock.advance(hours=1)
    scanned = run(BillingCycle(ScanningStore(factory), directory(), clock), CycleRequest(MARCH))
    assert scanned.created == len(TENANTS)
    assert scanned.circuits_scanned == scanned.circuits_billed == 3 * len(TENANTS)

    clock.advance(hours=1)
    kept = run(BillingCycle(SqlBillingStore(factory), directory(), clock), CycleRequest(MARCH))
    # Same content, line by line (amounts, billed sample, N): the invoices are unchanged.
    assert (kept.created, kept.updated, kept.unchanged) == (0, 0, len(TENANTS))
    assert kept.totals == scanned.totals
    assert kept.circuits_scanned == must_scan


def _downgrade(url: str, revision: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.normalise_url(url).replace("%", "%%"))
    command.downgrade(config, revision)


def test_samples_stored_before_the_peaks_existed_are_folded_in_by_the_migration(
    database_url: str,
) -> None:
    # Loaded by today's code at the head revision (its tables have the newer columns), then
    # taken back to 0003, as if stored before the peaks existed: 0004's downgrade empties
    # the peaks, and the upgrade's backfill has to fold the samples in again.
    db.migrate(database_url, MIGRATIONS)
    factory = db.make_session_factory(db.make_engine(database_url))
    clock = Clock(AFTER_MARCH - timedelta(hours=12))
    must_scan = load_month(factory, clock, random.Random(6))
    _downgrade(database_url, "billing_0003")
    with factory() as session:
        assert session.scalar(select(UsagePeakRow.circuit_id).limit(1)) is None
    db.migrate(database_url, MIGRATIONS)

    clock.advance(hours=1)
    scanned = run(BillingCycle(ScanningStore(factory), directory(), clock), CycleRequest(MARCH))
    clock.advance(hours=1)
    kept = run(BillingCycle(SqlBillingStore(factory), directory(), clock), CycleRequest(MARCH))
    assert (kept.created, kept.updated, kept.unchanged) == (0, 0, len(TENANTS))
    assert kept.totals == scanned.totals
    assert kept.circuits_scanned == must_scan


def test_a_cut_off_before_the_last_samples_arrived_is_rated_from_the_samples(
    factory: sessionmaker[Session],
) -> None:
    rng = random.Random(8)
    clock = Clock(datetime(2025, 3, 20, tzinfo=UTC))
    load_month(factory, clock, rng)
    cut_off = clock.advance(hours=1)
    clock.advance(days=12)
    late = []
    for tenant, _, zone in TENANTS:
        start, end = MARCH.window(ZoneInfo(zone))
        late += usage(rng, f"{tenant}-whole", tenant, start, end, 9000)
    store_usage(factory, clock, rng, late)  # new intervals, and conflicts set aside
    clock.advance(hours=1)

    as_of = CycleRequest(MARCH, as_of=cut_off)
    scanned = run(BillingCycle(ScanningStore(factory), directory(), clock), as_of)
    assert scanned.created == len(TENANTS)
    kept = run(BillingCycle(SqlBillingStore(factory), directory(), clock), as_of)
    assert (kept.created, kept.updated, kept.unchanged) == (0, 0, len(TENANTS))
    # The circuits with later samples and the changed ones.
    assert kept.circuits_scanned == 2 * len(TENANTS)

    now = run(BillingCycle(SqlBillingStore(factory), directory(), clock), CycleRequest(MARCH))
    assert now.updated == len(TENANTS)
    assert now.circuits_scanned == len(TENANTS)  # only the changed circuits
    again = run(BillingCycle(ScanningStore(factory), directory(), clock), CycleRequest(MARCH))
    assert (again.updated, again.unchanged) == (0, len(TENANTS))


def test_concurrent_recorders_lose_no_sample(postgres_database_url: str) -> None:
    factory = migrated(postgres_database_url)
    start = datetime(2025, 3, 3, tzinfo=UTC)
    rows = [
        {"circuit_id": "c-1", "tenant_id": "acme-sg", "interval_start": start + timedelta(
            minutes=5 * i), "interval_seconds": 300, "bytes_in": (i * 7919) % 1000,
         "bytes_out": i, "valid": True, "received_at": start + timedelta(days=1)}
        for i in range(600)
    ]
    barrier = threading.Barrier(4)

    def record(part: list[dict[str, object]]) -> None:
        barrier.wait()
        for index in range(0, len(part), 10):
            with db.transaction(factory) as session:
                record_samples(session, part[index:index + 10])

    threads = [threading.Thread(target=record, args=(rows[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with factory() as session:
        (month,) = kept_months(session, MARCH)["c-1"]
        assert session.scalar(select(UsagePeakRow.samples)) == 600
    expected = nearest_rank_p95([
        Sample(r["interval_start"], r["bytes_in"], r["bytes_out"])  # type: ignore[arg-type]
        for r in rows
    ])
    assert month.percentile(*MARCH.window(directory().customer("acme-sg").time_zone)) == expected


def test_one_call_for_a_mixed_batch_keeps_what_one_call_per_sample_keeps(
    factory: sessionmaker[Session],
) -> None:
    # Tenants of two zones, both ends, invalid samples, across a month end that is in
    # March in Los Angeles and in April in Singapore: the per-call lookups record_samples
    # shares between samples must give each sample what a call of its own gives it.
    rng = random.Random(11)
    start = datetime(2025, 3, 31, 12, tzinfo=UTC)
    rows = [
        {
            "tenant_id": tenant, "side": side, "interval_start": start + timedelta(minutes=5 * i),
            "interval_seconds": 300, "bytes_in": rng.randrange(10**9),
            "bytes_out": rng.randrange(10**9), "valid": rng.random() > 0.1,
            "received_at": start + timedelta(days=2, seconds=i),
        }
        for i in range(200)
        for tenant, _, _ in TENANTS
        for side in (1, 2)
    ]
    with db.transaction(factory) as session:
        record_samples(session, [row | {"circuit_id": f"batch-{row['tenant_id']}"} for row in rows])
    for row in rows:
        with db.transaction(factory) as session:
            record_samples(session, [row | {"circuit_id": f"alone-{row['tenant_id']}"}])
    with factory() as session:
        stored = list(session.scalars(select(UsagePeakRow)))
    kept, alone = (
        {
            (r.circuit_id.partition("-")[2], r.year, r.month, r.time_zone): (
                r.samples, r.first_start, r.last_start, r.last_received, r.top_in, r.top_out,
                r.p95_in, r.p95_out,
            )
            for r in stored
            if r.circuit_id.startswith(prefix)
        }
        for prefix in ("batch-", "alone-")
    )
    assert kept == alone
    assert {(month, zone) for _, _, month, zone in kept} == {
        (3, "Asia/Singapore"), (4, "Asia/Singapore"), (3, "America/Los_Angeles")
    }
