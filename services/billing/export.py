"""Invoice documents: CSV (one row per line, then subtotal, tax, total) and PDF."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

from fpdf import FPDF

from services.billing.domain.money import format_amount
from services.billing.domain.rating import LineKind
from services.billing.invoices import InvoiceState, StoredInvoice

CSV_COLUMNS = [
    "row", "line_id", "kind", "circuit_id", "description", "segment_start", "segment_end",
    "days_covered", "days_in_month", "factor", "unit_price", "bandwidth_mbps",
    "samples_expected", "samples_present", "samples_discarded", "billed_sample_mbps",
    "billed_sample_time", "billed_direction", "adjusts_invoice_id", "currency", "amount",
]


def file_stem(invoice: StoredInvoice) -> str:
    return invoice.number or f"DRAFT-{invoice.tenant_id}-{invoice.month}"


def to_csv(invoice: StoredInvoice) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for stored in invoice.lines:
        line, burst = stored.line, stored.line.burst
        writer.writerow({
            "row": "line", "line_id": stored.id, "kind": line.kind.name,
            "circuit_id": line.circuit_id, "description": line.description,
            "segment_start": line.segment_start.isoformat(),
            "segment_end": line.segment_end.isoformat(),
            "days_covered": line.days_covered, "days_in_month": line.days_in_month,
            "factor": format_amount(line.factor), "unit_price": format_amount(line.unit_price),
            "bandwidth_mbps": line.bandwidth_mbps,
            "samples_expected": "" if burst is None else burst.samples_expected,
            "samples_present": "" if burst is None else burst.samples_present,
            "samples_discarded": "" if burst is None else burst.samples_discarded,
            "billed_sample_mbps": "" if burst is None else burst.billed_sample_mbps,
            "billed_sample_time": "" if burst is None else burst.billed_sample_time.isoformat(),
            "billed_direction": "" if burst is None else burst.billed_direction,
            "adjusts_invoice_id": line.adjusts_invoice_id,
            "currency": invoice.currency, "amount": format_amount(line.amount),
        })
    for label, amount in (
        ("subtotal", invoice.subtotal),
        (f"tax {format_amount(invoice.tax_rate)}", invoice.tax),
        ("total", invoice.total),
    ):
        writer.writerow({"row": label, "currency": invoice.currency,
                         "amount": format_amount(amount)})
    return out.getvalue().encode("utf-8")


class _InvoicePdf(FPDF):
    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self._footer_text = footer_text

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=7)
        self.cell(0, 5, f"{self._footer_text} - page {self.page_no()}/{{nb}}", align="C")


def _latin1(text: str) -> str:
    # The PDF core fonts cover Latin-1 only; anything else is shown as '?', never dropped.
    return text.encode("latin-1", errors="replace").decode("latin-1")


def _local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def to_pdf(invoice: StoredInvoice) -> bytes:
    draft = invoice.state is not InvoiceState.FINALIZED
    title = "DRAFT INVOICE (not payable)" if draft else "TAX INVOICE"
    pdf = _InvoicePdf(f"Invoice {file_stem(invoice)} - {invoice.issuer_legal_name}")
    pdf.set_title(f"Invoice {file_stem(invoice)}")
    pdf.set_author(_latin1(invoice.issuer_legal_name))
    pdf.alias_nb_pages()
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.add_page()
    _heading(pdf, invoice, title)
    _parties(pdf, invoice)
    _lines(pdf, invoice)
    _totals(pdf, invoice)
    return bytes(pdf.output())


def _heading(pdf: FPDF, invoice: StoredInvoice, title: str) -> None:
    text = pdf.epw
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(text, 9, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    facts = [
        ("Invoice number", invoice.number or "(assigned on finalisation)"),
        ("Invoice id", invoice.id),
        ("Billing period", f"{invoice.month} (calendar month, {invoice.time_zone})"),
        ("Currency", invoice.currency),
        ("Usage as of", _local(invoice.as_of_time, invoice.time_zone)),
    ]
    if invoice.finalized_at is not None:
        facts.append(("Issued", _local(invoice.finalized_at, invoice.time_zone)))
    for label, value in facts:
        pdf.cell(35, 5, label + ":")
        pdf.cell(text - 35, 5, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _parties(pdf: FPDF, invoice: StoredInvoice) -> None:
    text = pdf.epw
    top = pdf.get_y()
    half = text / 2
    for column, (heading, name, address, extra) in enumerate((
        ("From", invoice.issuer_legal_name, invoice.issuer_address, invoice.issuer_tax_id),
        ("Bill to", invoice.customer_legal_name, invoice.customer_address,
         f"Customer id: {invoice.tenant_id}"),
    )):
        pdf.set_xy(pdf.l_margin + column * half, top)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(half, 5, heading, new_x="LEFT", new_y="NEXT")
        pdf.set_font("Helvetica", size=9)
        body = "\n".join(part for part in (name, address, extra) if part)
        pdf.multi_cell(half - 4, 4.5, _latin1(body), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(pdf.l_margin, max(pdf.get_y(), top + 25))
    pdf.ln(2)


def _widths(pdf: FPDF) -> tuple[float, float, float]:
    return (pdf.epw - 60, 18, 42)


def _lines(pdf: FPDF, invoice: StoredInvoice) -> None:
    widths = _widths(pdf)
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_fill_color(225, 230, 240)
    for width, heading, align in zip(
        widths, ("Description", "Days", f"Amount ({invoice.currency})"), "LRR", strict=True
    ):
        pdf.cell(width, 6, heading, border=1, align=align, fill=True)
    pdf.ln()
    for stored in invoice.lines:
        line = stored.line
        pdf.set_font("Helvetica", size=8.5)
        days = f"{line.days_covered}/{line.days_in_month}" if line.kind is not LineKind.NRC else ""
        details = [f"{line.circuit_id}: {line.description}"]
        details.append(
            f"unit price {format_amount(line.unit_price)}, factor {format_amount(line.factor)}"
        )
        if line.burst is not None:
            b = line.burst
            details.append(
                f"samples expected {b.samples_expected}, present {b.samples_present}, "
                f"discarded {b.samples_discarded}; billed sample {b.billed_sample_mbps} Mbps "
                f"({b.billed_direction}) at {_local(b.billed_sample_time, invoice.time_zone)}"
            )
        if line.burst is not None and line.burst.intervals_lost:
            details.append(f"intervals lost to meter gaps {line.burst.intervals_lost}")
        if line.reconciliation:
            details.append(f"ends differ: {line.reconciliation}")
        if line.adjusts_invoice_id:
            details.append(f"corrects invoice {line.adjusts_invoice_id}")
        body = _latin1("\n".join(details))
        row_height = pdf.multi_cell(widths[0], 4.2, body, dry_run=True, output="HEIGHT")
        assert isinstance(row_height, float)
        if pdf.get_y() + row_height > pdf.page_break_trigger:
            pdf.add_page()
        start_y = pdf.get_y()
        pdf.multi_cell(widths[0], 4.2, body, border="LB", new_x="RIGHT", new_y="TOP")
        pdf.cell(widths[1], row_height, days, border="B", align="R")
        pdf.cell(widths[2], row_height, format_amount(line.amount), border="RB", align="R")
        pdf.set_xy(pdf.l_margin, start_y + row_height)
    pdf.ln(3)


def _totals(pdf: FPDF, invoice: StoredInvoice) -> None:
    widths = _widths(pdf)
    pdf.set_font("Helvetica", size=10)
    for label, amount, bold in (
        ("Subtotal", invoice.subtotal, False),
        (f"{invoice.tax_label} {format_amount(invoice.tax_rate * 100)}%", invoice.tax, False),
        (f"Total ({invoice.currency})", invoice.total, True),
    ):
        pdf.set_font("Helvetica", "B" if bold else "", 10)
        pdf.cell(widths[0] + widths[1], 6, label, align="R")
        pdf.cell(widths[2], 6, format_amount(amount), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", size=7.5)
    pdf.multi_cell(
        pdf.epw, 3.8,
        "Burst: 95th percentile (nearest rank) of the segment's valid 5-minute samples, per "
        "direction, the larger direction, rounded up to a whole Mbps; overage above the CIR "
        "times the burst price times days covered / days in month. Each line is rounded once, "
        "half-up; tax is on the subtotal.",
    )
