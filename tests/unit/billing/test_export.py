"""Invoice exports an accounts-payable desk accepts: a Chinese invoice's PDF carries the
customer's name as text and as glyphs, due date, terms, remittance and PO; the CSV's line
column sums to the subtotal."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pypdfium2  # type: ignore[import-untyped]

from services.billing import export
from services.billing.domain.credit_notes import Balance
from services.billing.domain.entities import BillingEntity, parse_directory
from services.billing.domain.rating import BillingMonth, BurstEvidence, Line, LineKind
from services.billing.invoices import InvoiceState, StoredInvoice, StoredLine

DATA = Path(__file__).parents[3] / "services" / "billing" / "data" / "billing_entities.toml"
NAME = "重庆长江制造有限公司"
ADDRESS = "重庆市渝中区朝天门街6号"
UTC8 = "Asia/Shanghai"


def _line(kind: LineKind, amount: str, days: int, **changes: object) -> Line:
    line = Line(
        key=f"c-cq/{kind.name}", kind=kind, circuit_id="c-cq",
        description=f"{kind.name} 100 Mbps, 2025-03-01 to 2025-03-12",
        # 12 days: 1 to 12 March inclusive (the segment ends at midnight starting the 13th).
        segment_start=datetime(2025, 2, 28, 16, tzinfo=UTC),
        segment_end=datetime(2025, 3, 12, 16, tzinfo=UTC),
        days_covered=days, days_in_month=31, factor=Decimal(days) / Decimal(31),
        unit_price=Decimal("1234567.00"), bandwidth_mbps=100, amount=Decimal(amount),
    )
    return replace(line, **changes)  # type: ignore[arg-type]


BURST = BurstEvidence(
    samples_expected=3456, samples_present=3400, samples_discarded=2, billed_sample_mbps=137,
    billed_sample_time=datetime(2025, 3, 5, 3, 15, tzinfo=UTC), billed_direction="egress",
    billed_sample_bps=Fraction(137_000_000), cir_mbps=100, overage_mbps=37,
)


def _invoice(state: InvoiceState = InvoiceState.FINALIZED) -> StoredInvoice:
    lines = [
        _line(LineKind.MRC, "477896.90", 12),
        _line(LineKind.NRC, "1500.00", 12),
        _line(LineKind.BURST, "573.23", 12, unit_price=Decimal("40.00"), burst=BURST),
    ]
    subtotal = sum((line.amount for line in lines), Decimal(0))
    tax = Decimal("28784.41")
    at = datetime(2025, 4, 1, 2, tzinfo=UTC)
    return StoredInvoice(
        id="inv-1", number="CQ-2025-03-000007" if state is InvoiceState.FINALIZED else "",
        tenant_id="yangtze-cq", billing_entity_id="cq-telco", month=BillingMonth(2025, 3),
        time_zone=UTC8, state=state, currency="CNY",
        lines=[StoredLine(id=f"ln-{i}", line=line, adjusts_line_id="")
               for i, line in enumerate(lines)],
        subtotal=subtotal, tax_rate=Decimal("0.06"), tax=tax, total=subtotal + tax,
        issuer_legal_name="Chongqing Telco IDC Co., Ltd.", issuer_address="88 Jiangbei Road",
        issuer_tax_id="USCC 91500000000000000X", tax_label="VAT",
        customer_legal_name=NAME, customer_address=ADDRESS,
        as_of_time=at, billing_run_id="run-1", created_at=at, updated_at=at,
        # 3 April in Chongqing.
        finalized_at=datetime(2025, 4, 2, 17, tzinfo=UTC) if state is InvoiceState.FINALIZED
        else None,
        due_date=date(2025, 5, 18) if state is InvoiceState.FINALIZED else None,
    )


def _entity() -> BillingEntity:
    return parse_directory(DATA.read_text()).entity("cq-telco")


def test_a_chinese_invoice_renders_its_name_as_text_and_as_glyphs() -> None:
    content = export.to_pdf(_invoice(), _entity(), {"c-cq": "PO-4711"})
    document = pypdfium2.PdfDocument(content)
    try:
        page = document[0]
        text = page.get_textpage().get_text_range()
        image = page.render(scale=1).to_pil().convert("L")
    finally:
        document.close()
    assert NAME in text and ADDRESS in text
    assert "?" * 3 not in text
    # Issue date in the entity's zone, due 45 days later (cq-telco's terms).
    assert "CQ-2025-03-000007" in text and "2025-04-03" in text and "2025-05-18" in text
    assert "Net 45 days" in text and "PO-4711" in text and "ICBKCNBJCQG" in text
    assert "中国工商银行" in text
    # Inclusive period, days/days, thousands separators, burst evidence.
    assert "2025-03-01 to 2025-03-31" in text and "12/31" in text
    assert "477,896.90" in text and "1,234,567.00" in text
    assert "samples expected 3456, present 3400" in text
    dark = sum(image.histogram()[:128])  # pixels darker than mid-grey
    assert dark > 2000, "the page looks blank"


def test_the_due_date_is_the_one_fixed_on_issue_whatever_the_terms_are_now() -> None:
    # Issued under 30-day terms (due 3 May); the entity's terms are 45 days today.
    invoice = replace(_invoice(), due_date=date(2025, 5, 3))
    document = export.invoice_document(invoice, _entity(), {})
    facts = dict(document.facts)
    assert (facts["Due date"], facts["Payment terms"]) == (
        "2025-05-03", "Net 30 days from the issue date"
    )


def test_a_draft_says_it_is_not_issued() -> None:
    content = export.to_pdf(_invoice(InvoiceState.DRAFT), _entity(), {})
    document = pypdfium2.PdfDocument(content)
    try:
        text = document[0].get_textpage().get_text_range()
    finally:
        document.close()
    assert "DRAFT INVOICE (not payable)" in text and "not issued (draft)" in text
    assert "none given" in text


def test_summing_the_csv_line_column_gives_the_subtotal() -> None:
    invoice = _invoice()
    rows = list(csv.DictReader(io.StringIO(export.to_csv(invoice, {"c-cq": "PO-4711"}).decode())))
    lines = [row for row in rows if row["row"] == "line"]
    (totals,) = [row for row in rows if row["row"] == "totals"]
    column = [Decimal(row["line_amount"]) for row in rows if row["line_amount"]]
    assert len(column) == len(lines) == 3
    assert sum(column) == Decimal(totals["subtotal"]) == invoice.subtotal
    assert Decimal(totals["subtotal"]) + Decimal(totals["tax"]) == Decimal(totals["total"])
    mrc = lines[0]
    assert (mrc["period_first_day"], mrc["period_last_day"], mrc["proration"]) == (
        "2025-03-01", "2025-03-12", "12/31"
    )
    assert mrc["purchase_order"] == "PO-4711"


def test_credit_notes_applied_to_an_invoice_leave_its_total_and_lower_the_amount_due() -> None:
    invoice = _invoice()
    credit = Balance(
        brought_forward=Decimal("0"), credit_note_ids=["cn-1"], credits=Decimal("8754.54"),
        applied=Decimal("8754.54"), amount_due=invoice.total - Decimal("8754.54"),
        carried_forward=Decimal("0"),
    )
    document = export.invoice_document(invoice, _entity(), {}, credit)
    totals = {label: amount for label, amount, _ in document.totals}
    assert totals["Total (CNY)"] == "508,754.54"  # the invoice's own total stays
    assert totals["Credit applied from credit notes"] == "-8,754.54"
    assert totals["Amount due (CNY)"] == "CNY 500,000.00"
    assert "Please pay CNY 500,000.00" in document.sections[0].lines[-1]
    rows = list(csv.DictReader(io.StringIO(export.to_csv(invoice, {}, credit).decode())))
    (row,) = [r for r in rows if r["row"] == "totals"]
    assert (row["total"], row["credit_applied"], row["amount_due"]) == (
        "508754.54", "8754.54", "500000.00"
    )
    # Without credit notes the document reads as before: the total is what is due.
    plain = export.invoice_document(invoice, _entity(), {})
    assert [label for label, _, _ in plain.totals][-1] == "Total due (CNY)"
