"""idcctl's invoice: a BOOST line by kind, with its started hours where others have days."""

from __future__ import annotations

from rich.console import Console

from idc.billing.v1 import invoice_pb2
from idc.type.v1 import money_pb2
from services.cli import render


def test_a_boost_line_shows_its_kind_and_started_hours() -> None:
    invoice = invoice_pb2.Invoice(id="inv-1", tenant_id="acme-sg", currency_code="SGD")
    invoice.lines.add(
        kind=invoice_pb2.INVOICE_LINE_KIND_MRC, circuit_id="c-1", description="MRC",
        days_covered=31, days_in_month=31, amount=money_pb2.Money(amount="2180.25"),
    )
    invoice.lines.add(
        kind=invoice_pb2.INVOICE_LINE_KIND_BOOST, circuit_id="c-1", description="Boost",
        days_in_month=31, bandwidth_mbps=433, amount=money_pb2.Money(amount="12.49"),
        boost=invoice_pb2.BoostDetail(boost_id="b-1", started_hours=3),
    )
    console = Console(width=200, record=True)
    render.show_invoice(console, invoice)
    rows = [line for line in console.export_text().splitlines() if "c-1" in line]
    assert "31/31" in rows[0]
    assert "BOOST" in rows[1] and "3 h" in rows[1] and "0/31" not in rows[1]
