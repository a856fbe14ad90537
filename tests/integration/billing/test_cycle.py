"""Month-end runs on the real database: the worked example, reruns, crashes, late usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.billing.cycle import BillingCycle, CycleRequest, Progress, Summary
from services.billing.domain.money import format_amount
from services.billing.domain.rating import BillingMonth, LineKind
from services.billing.invoices import InvoiceDraft, InvoiceState, SaveOutcome, StoredInvoice
from services.billing.store import SqlBillingStore
from services.billing.tables import BillingRunRow, InvoiceRow
from tests.integration.billing.support import (
    Clock,
    activated,
    directory,
    ingest_directly,
    migrated,
    modified,
    price,
    sample,
)
from tests.unit.billing import worked_example as example

pytestmark = pytest.mark.integration

MARCH = BillingMonth(2025, 3)
APRIL = BillingMonth(2025, 4)
AFTER_MARCH = datetime(2025, 4, 2, tzinfo=UTC)


def load_worked_example(
    factory: sessionmaker[Session], clock: Clock, tenant: str, prices: example.Prices
) -> None:
    p = prices
    circuit = f"c-{tenant}"
    events = [
        activated(circuit, tenant, example.ACTIVATION, 200,
                  price(p.currency, p.mrc_200, p.nrc, p.burst_200)),
        modified(circuit, tenant, example.UPGRADE, 500,
                 price(p.currency, p.mrc_500, p.nrc, p.burst_500)),
    ]
    events += [
        sample(circuit, tenant, s.interval_start, s.bytes_in, s.bytes_out, valid=s.valid)
        for s in example.series()
    ]
    ingest_directly(factory, clock, events)


def get(store: SqlBillingStore, invoice_id: str) -> StoredInvoice:
    invoice = store.invoice(invoice_id)
    assert invoice is not None
    return invoice


def run(cycle: BillingCycle, request: CycleRequest) -> Summary:
    messages = list(cycle.run(request))
    assert all(isinstance(m, Progress) for m in messages[:-1])
    assert isinstance(messages[-1], Summary)
    return messages[-1]


@pytest.fixture
def clock() -> Clock:
    return Clock(AFTER_MARCH)


@pytest.fixture
def factory(database_url: str) -> sessionmaker[Session]:
    return migrated(database_url)


def test_worked_example_in_sgd_and_cny_and_the_same_month_twice(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    load_worked_example(factory, clock, "acme-sg", example.SGD)
    load_worked_example(factory, clock, "yangtze-cq", example.CNY)
    store = SqlBillingStore(factory)
    cycle = BillingCycle(store, directory(), clock)
    clock.advance(hours=1)

    first = run(cycle, CycleRequest(MARCH))
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    invoices = {get(store, i).tenant_id: get(store, i) for i in first.invoice_ids}
    for tenant, expected, tax_rate in (
        ("acme-sg", example.EXPECTED_SGD, "0.09"),
        ("yangtze-cq", example.EXPECTED_CNY, "0.06"),
    ):
        invoice = invoices[tenant]
        assert [(s.line.kind.name, format_amount(s.line.amount)) for s in invoice.lines] == (
            expected[0]
        )
        assert (
            format_amount(invoice.subtotal), format_amount(invoice.tax),
            format_amount(invoice.total),
        ) == expected[1]
        assert format_amount(invoice.tax_rate) == tax_rate
        burst = invoice.lines[2].line.burst
        assert burst is not None
        assert (burst.samples_expected, burst.samples_present, burst.samples_discarded) == (
            2820, 2807, 140
        )
        assert burst.billed_sample_time == example.ACTIVATION + timedelta(
            minutes=5 * example.BILLED_1
        )
    assert invoices["yangtze-cq"].currency == "CNY"
    assert invoices["yangtze-cq"].time_zone == "Asia/Shanghai"

    # The same month again: the same invoices, recomputed in place, never a second set.
    clock.advance(hours=1)
    second = run(cycle, CycleRequest(MARCH))
    assert sorted(second.invoice_ids) == sorted(first.invoice_ids)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 2)
    with factory() as session:
        assert len(session.scalars(select(InvoiceRow.id)).all()) == 2


class CrashingStore(SqlBillingStore):
    """The real store, dying (like a killed process) before its n-th invoice write."""

    def __init__(self, factory: sessionmaker[Session], crash_at: int) -> None:
        super().__init__(factory)
        self.saves = 0
        self.crash_at = crash_at

    def save(
        self, draft: InvoiceDraft, run_id: str, as_of: datetime, now: datetime
    ) -> SaveOutcome:
        self.saves += 1
        if self.saves == self.crash_at:
            raise SystemExit("killed")
        return super().save(draft, run_id, as_of, now)


def test_run_killed_halfway_leaves_whole_invoices_and_a_rerun_completes(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    terms = price("SGD", "3100.00", "0", "1.00")
    start = datetime(2025, 2, 1, tzinfo=UTC)
    ingest_directly(
        factory, clock,
        [activated(f"c-{t}", t, start, 100, terms) for t in ("t-a", "t-b", "t-c")],
    )
    with pytest.raises(SystemExit):
        run(BillingCycle(CrashingStore(factory, crash_at=2), directory(), clock),
            CycleRequest(MARCH))
    with factory() as session:
        written = session.scalars(select(InvoiceRow)).all()
        runs = session.scalars(select(BillingRunRow)).all()
    assert [(r.tenant_id, r.total) for r in written] == [("t-a", "3379.00")]
    assert [r.finished_at for r in runs] == [None]  # the run record shows it did not finish

    clock.advance(minutes=5)
    store = SqlBillingStore(factory)
    summary = run(BillingCycle(store, directory(), clock), CycleRequest(MARCH))
    assert (summary.created, summary.unchanged) == (2, 1)
    assert written[0].id in summary.invoice_ids
    for invoice_id in summary.invoice_ids:
        invoice = store.invoice(invoice_id)
        assert invoice is not None
        # Each invoice is whole: its lines add up to its subtotal.
        assert sum(s.line.amount for s in invoice.lines) == invoice.subtotal == Decimal("3100.00")
        assert invoice.total == Decimal("3379.00")  # 3100.00 + 9% GST 279.00


def test_late_sample_after_finalisation_becomes_an_adjustment_next_month(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    # 100 Mbps CIR since February, burst 10.00 SGD per Mbps; March usage at 100 Mbps.
    circuit, tenant = "c-late", "acme-sg"
    terms = price("SGD", "3100.00", "0", "10.00")
    march_1 = datetime(2025, 3, 1, 12, tzinfo=UTC)
    ingest_directly(
        factory, clock,
        [activated(circuit, tenant, datetime(2025, 2, 1, tzinfo=UTC), 100, terms)]
        + [sample(circuit, tenant, march_1 + timedelta(minutes=5 * i), 37_500_000 * 100, 0)
           for i in range(19)],
    )
    store = SqlBillingStore(factory)
    cycle = BillingCycle(store, directory(), clock)
    clock.advance(hours=1)
    (march_id,) = run(cycle, CycleRequest(MARCH)).invoice_ids
    finalized = store.finalize(march_id, clock.advance(minutes=1), "SG", 30)
    assert finalized.state is InvoiceState.FINALIZED
    assert finalized.number == "SG-2025-03-000001"
    assert finalized.total == Decimal("3379.00")  # burst line 0.00: p95 at the CIR

    # Two March samples at 150 Mbps arrive after finalisation: N = 21, floor(105/100) = 1
    # discarded, p95 = the other 150 -> overage 50 Mbps * 10.00 * 31/31 = 500.00.
    clock.advance(days=1)
    ingest_directly(
        factory, clock,
        [sample(circuit, tenant, datetime(2025, 3, 20, tzinfo=UTC) + timedelta(minutes=5 * i),
                37_500_000 * 150, 0) for i in range(2)],
    )
    clock.advance(hours=1)
    march_again = run(cycle, CycleRequest(MARCH))
    assert march_again.skipped_finalized == 1
    assert store.invoice(march_id) == finalized  # a finalised invoice never changes

    april = run(cycle, CycleRequest(APRIL))
    (april_id,) = april.invoice_ids
    invoice = store.invoice(april_id)
    assert invoice is not None
    adjustments = [s for s in invoice.lines if s.line.kind is LineKind.ADJUSTMENT]
    assert [(s.line.amount, s.line.adjusts_invoice_id) for s in adjustments] == [
        (Decimal("500.00"), march_id)
    ]
    original_burst = next(s for s in finalized.lines if s.line.kind is LineKind.BURST)
    assert adjustments[0].adjusts_line_id == original_burst.id
    assert "SG-2025-03-000001" in adjustments[0].line.description
    # April: MRC 3100.00 (no April usage: no burst line) + adjustment 500.00 = 3600.00.
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal("3600.00"), Decimal("324.00"), Decimal("3924.00")
    )
    # Rerunning April does not add the adjustment twice.
    clock.advance(hours=1)
    again = run(cycle, CycleRequest(APRIL))
    assert (again.invoice_ids, again.unchanged) == ([april_id], 1)


def test_as_of_cutoff_makes_a_run_reproducible(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    circuit, tenant = "c-asof", "acme-sg"
    terms = price("SGD", "3100.00", "0", "10.00")
    ingest_directly(
        factory, clock,
        [activated(circuit, tenant, datetime(2025, 2, 1, tzinfo=UTC), 100, terms),
         sample(circuit, tenant, datetime(2025, 3, 3, tzinfo=UTC), 37_500_000 * 100, 0)],
    )
    cutoff = clock.now
    clock.advance(hours=2)
    ingest_directly(
        factory, clock,
        [sample(circuit, tenant, datetime(2025, 3, 4, tzinfo=UTC), 37_500_000 * 300, 0)],
    )
    store = SqlBillingStore(factory)
    cycle = BillingCycle(store, directory(), clock)
    clock.advance(hours=1)
    (invoice_id,) = run(cycle, CycleRequest(MARCH, as_of=cutoff)).invoice_ids
    assert get(store, invoice_id).total == Decimal("3379.00")
    now = run(cycle, CycleRequest(MARCH))
    assert now.updated == 1
    # Two samples, none discarded: p95 = 300 Mbps, overage 200 * 10.00 = 2000.00 more.
    assert get(store, invoice_id).subtotal == Decimal("5100.00")
