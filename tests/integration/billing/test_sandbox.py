"""Sandbox circuits (README "Sandbox") are never invoiced: their changes are kept, flagged,
and the month's run leaves them out, saying how many; a sandbox tenant gets no invoice and
no invoice number, while a real tenant's invoice of the same month is unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from idc.events.v1 import common_pb2
from services.billing.cycle import BillingCycle, CycleRequest, Summary
from services.billing.domain.rating import BillingMonth
from services.billing.invoices import invoice_id_for
from services.billing.store import SqlBillingStore
from tests.integration.billing.support import (
    Clock,
    activated,
    directory,
    ingest_directly,
    migrated,
    price,
)

pytestmark = pytest.mark.integration

MARCH = BillingMonth(2025, 3)
MAR_1 = datetime(2025, 2, 28, 16, tzinfo=UTC)  # midnight in Singapore


def run(cycle: BillingCycle, **request: object) -> Summary:
    last = list(cycle.run(CycleRequest(month=MARCH, **request)))[-1]  # type: ignore[arg-type]
    assert isinstance(last, Summary)
    return last


def test_a_month_invoices_no_sandbox_circuit_and_counts_those_it_left_out(
        database_url: str) -> None:
    factory = migrated(database_url)
    clock = Clock(datetime(2025, 4, 2, tzinfo=UTC))
    terms = price("SGD", "1000.00", "0", "0")
    trial = [activated(f"c-try-{n}", "sandbox-demo", MAR_1, 100, terms) for n in (1, 2)]
    for event in trial:
        event.circuit.CopyFrom(common_pb2.CircuitParameters(
            circuit_id=event.circuit_id, tenant_id="sandbox-demo", sandbox=True))
    ingest_directly(factory, clock, [*trial, activated("c-real", "acme-sg", MAR_1, 100, terms)])
    store = SqlBillingStore(factory)
    cycle = BillingCycle(store, directory(), clock)
    summary = run(cycle)
    assert (summary.sandbox_left_out, summary.circuits_billed, summary.created) == (2, 1, 1)
    assert summary.invoice_ids == [invoice_id_for("acme-sg", MARCH)]
    # Leaving them out is no warning; only the real circuit's lack of usage is one.
    assert [w.subject for w in summary.warnings] == ["c-real"]
    assert store.invoice(invoice_id_for("sandbox-demo", MARCH)) is None
    # Asked for by name, the sandbox tenant still gets nothing.
    alone = run(cycle, tenant_ids=["sandbox-demo"])
    assert (alone.sandbox_left_out, alone.created, alone.invoice_ids) == (2, 0, [])
