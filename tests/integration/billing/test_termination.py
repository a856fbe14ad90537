"""Early termination on the real database: the fee on the month of the disconnect, to the
cent, once however often the month is run."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pypdfium2  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.billing import export
from services.billing.cycle import BillingCycle, CycleRequest, Summary
from services.billing.domain.rating import BillingMonth, LineKind
from services.billing.invoices import invoice_id_for
from services.billing.store import SqlBillingStore
from services.billing.tables import CircuitChangeRow
from tests.integration.billing.support import (
    Clock,
    activated,
    directory,
    disconnected,
    ingest_directly,
    migrated,
    price,
)

pytestmark = pytest.mark.integration

MARCH = BillingMonth(2025, 3)
APRIL = BillingMonth(2025, 4)
# Midnight in Singapore (UTC+8), the customer's billing time zone.
JAN_15 = datetime(2025, 1, 14, 16, tzinfo=UTC)
MAR_20 = datetime(2025, 3, 19, 16, tzinfo=UTC)


def run(cycle: BillingCycle, month: BillingMonth) -> Summary:
    last = list(cycle.run(CycleRequest(month=month, tenant_ids=["acme-sg"])))[-1]
    assert isinstance(last, Summary)
    return last


def test_disconnect_before_the_term_ends_charges_the_fee_once(database_url: str) -> None:
    factory: sessionmaker[Session] = migrated(database_url)
    clock = Clock(datetime(2025, 4, 2, tzinfo=UTC))
    terms = price("SGD", "2180.25", "0", "0", termination_share="0.5")
    # A second circuit of a 1-month term, disconnected after it: no fee.
    short = price("SGD", "945.00", "0", "0", term_months=1, termination_share="0.5")
    ingest_directly(factory, clock, [
        activated("c-term", "acme-sg", JAN_15, 100, terms),
        disconnected("c-term", "acme-sg", MAR_20, 100, terms),
        activated("c-short", "acme-sg", JAN_15, 20, short),
        disconnected("c-short", "acme-sg", MAR_20, 20, short),
    ])
    with factory() as session:
        shares = set(session.scalars(select(CircuitChangeRow.termination_share)))
    assert shares == {"0.5"}
    store = SqlBillingStore(factory)
    cycle = BillingCycle(store, directory(), clock)
    first = run(cycle, MARCH)
    assert first.created == 1
    invoice = store.invoice(invoice_id_for("acme-sg", MARCH))
    assert invoice is not None
    amounts = {(s.line.circuit_id, s.line.kind): s.line.amount for s in invoice.lines}
    # MRC 1 to 20 March: 2180.25 * 19 / 31 = 1336.2822... -> 1336.28; 945.00 * 19 / 31 =
    # 579.19; the fee: 2025-03-20 + 9 months = 2025-12-20 <= 2026-01-15 (+10 is past it):
    # 9 * 2180.25 * 0.5 = 9811.125 -> 9811.13. Subtotal 11726.60, GST 9 % 1055.394 -> 1055.39.
    assert amounts == {
        ("c-term", LineKind.MRC): Decimal("1336.28"),
        ("c-term", LineKind.TERMINATION): Decimal("9811.13"),
        ("c-short", LineKind.MRC): Decimal("579.19"),
    }
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal("11726.60"), Decimal("1055.39"), Decimal("12781.99")
    )
    entity = directory().entity(invoice.billing_entity_id)
    page = pypdfium2.PdfDocument(export.to_pdf(invoice, entity, {}))[0]
    text = page.get_textpage().get_text_range()
    assert "Early termination 2025-03-20: 9 remaining whole months" in text
    assert "9,811.13" in text and "0/31" not in text
    # The same month again: the same invoice, still one fee.
    clock.advance(hours=1)
    again = run(cycle, MARCH)
    assert (again.created, again.unchanged) == (0, 1)
    rerun = store.invoice(invoice.id)
    assert rerun is not None
    assert [s.line.kind for s in rerun.lines].count(LineKind.TERMINATION) == 1
    assert rerun.total == invoice.total
    # Finalised, then April: nothing new, so no April invoice and no adjustment of the fee.
    store.finalize(invoice.id, clock(), "SG", 30)
    clock.now = datetime(2025, 5, 2, tzinfo=UTC)
    april = run(cycle, APRIL)
    assert (april.created, april.adjustment_lines) == (0, 0)


def test_a_disconnect_arriving_after_finalisation_is_charged_next_month(
    database_url: str,
) -> None:
    factory: sessionmaker[Session] = migrated(database_url)
    clock = Clock(datetime(2025, 4, 2, tzinfo=UTC))
    terms = price("SGD", "2180.25", "0", "0", termination_share="0.5")
    ingest_directly(factory, clock, [activated("c-term", "acme-sg", JAN_15, 100, terms)])
    store = SqlBillingStore(factory)
    cycle = BillingCycle(store, directory(), clock)
    run(cycle, MARCH)
    march = store.finalize(invoice_id_for("acme-sg", MARCH), clock(), "SG", 30)
    assert [s.line.kind for s in march.lines] == [LineKind.MRC]
    # The disconnect of 20 March reaches billing only now: April's invoice corrects March
    # (MRC 2180.25 -> 1336.28, -843.97) and carries the fee, both as adjustments.
    clock.advance(hours=2)
    ingest_directly(factory, clock, [disconnected("c-term", "acme-sg", MAR_20, 100, terms)])
    clock.now = datetime(2025, 5, 2, tzinfo=UTC)
    april = run(cycle, APRIL)
    assert april.adjustment_lines == 2
    invoice = store.invoice(invoice_id_for("acme-sg", APRIL))
    assert invoice is not None
    assert sorted((s.line.adjusts_line_key.split("/")[1], s.line.amount)
                  for s in invoice.lines) == [("MRC", Decimal("-843.97")),
                                              ("TERMINATION", Decimal("9811.13"))]
    assert all(s.line.adjusts_invoice_id == march.id for s in invoice.lines)
    assert run(cycle, APRIL).unchanged == 1
