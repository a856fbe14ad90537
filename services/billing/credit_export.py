"""Credit note documents: CSV and PDF (JSON is the CreditNote message, in the servicer).

The PDF reuses the invoice document's page and text helpers (services/billing/export.py),
so both documents share fonts, footer and time formatting.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from fpdf import FPDF

from services.billing import export
from services.billing.credit_notes import StoredCreditNote
from services.billing.domain.money import format_amount

# Line amounts and the totals are in separate columns: summing "amount" gives the subtotal.
CSV_COLUMNS = [
    "row", "credit_note_number", "invoice_number", "line_id", "invoice_line_id", "circuit_id",
    "description", "currency", "amount", "summary_amount",
]


def file_stem(note: StoredCreditNote) -> str:
    return note.number


def to_csv(note: StoredCreditNote) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    common = {
        "credit_note_number": note.number, "invoice_number": note.invoice_number,
        "currency": note.currency,
    }
    for stored in note.lines:
        line = stored.line
        writer.writerow(common | {
            "row": "line", "line_id": stored.id, "invoice_line_id": line.invoice_line_id,
            "circuit_id": line.circuit_id, "description": line.description,
            "amount": format_amount(line.amount),
        })
    for label, amount in _totals(note):
        writer.writerow(common | {"row": label, "summary_amount": format_amount(amount)})
    return out.getvalue().encode("utf-8")


def _totals(note: StoredCreditNote) -> list[tuple[str, Decimal]]:
    return [
        ("subtotal", note.subtotal),
        (f"tax {format_amount(note.tax_rate)}", note.tax),
        ("total", note.total),
    ]


def to_pdf(note: StoredCreditNote) -> bytes:
    pdf = export._InvoicePdf(f"Credit note {note.number} - {note.issuer_legal_name}")
    pdf.set_title(f"Credit note {note.number}")
    pdf.set_author(export._latin1(note.issuer_legal_name))
    pdf.alias_nb_pages()
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.add_page()
    _heading(pdf, note)
    _parties(pdf, note)
    _lines(pdf, note)
    return bytes(pdf.output())


def _heading(pdf: FPDF, note: StoredCreditNote) -> None:
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(pdf.epw, 9, "CREDIT NOTE", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    facts = [
        ("Credit note number", note.number),
        ("Issued", export._local(note.issued_at, note.time_zone)),
        ("Credits invoice", f"{note.invoice_number} ({note.invoice_id})"),
        ("Invoice period", f"{note.invoice_month} ({note.time_zone})"),
        ("Currency", note.currency),
        ("Reason", note.reason),
    ]
    for label, value in facts:
        pdf.cell(38, 5, label + ":")
        pdf.multi_cell(pdf.epw - 38, 5, export._latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _parties(pdf: FPDF, note: StoredCreditNote) -> None:
    top, half = pdf.get_y(), pdf.epw / 2
    for column, (heading, body) in enumerate((
        ("From", (note.issuer_legal_name, note.issuer_address, note.issuer_tax_id)),
        ("To", (note.customer_legal_name, note.customer_address,
                f"Customer id: {note.tenant_id}")),
    )):
        pdf.set_xy(pdf.l_margin + column * half, top)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(half, 5, heading, new_x="LEFT", new_y="NEXT")
        pdf.set_font("Helvetica", size=9)
        text = "\n".join(part for part in body if part)
        pdf.multi_cell(half - 4, 4.5, export._latin1(text), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(pdf.l_margin, max(pdf.get_y(), top + 25))
    pdf.ln(2)


def _lines(pdf: FPDF, note: StoredCreditNote) -> None:
    amount_width = 42
    text_width = pdf.epw - amount_width
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_fill_color(225, 230, 240)
    pdf.cell(text_width, 6, "Credited", border=1, fill=True)
    pdf.cell(amount_width, 6, f"Amount ({note.currency})", border=1, align="R", fill=True)
    pdf.ln()
    pdf.set_font("Helvetica", size=8.5)
    for stored in note.lines:
        line = stored.line
        where = f"{line.circuit_id}: " if line.circuit_id else ""
        body = export._latin1(where + line.description)
        height = pdf.multi_cell(text_width, 4.2, body, dry_run=True, output="HEIGHT")
        assert isinstance(height, float)
        if pdf.get_y() + height > pdf.page_break_trigger:
            pdf.add_page()
        top = pdf.get_y()
        pdf.multi_cell(text_width, 4.2, body, border="LB", new_x="RIGHT", new_y="TOP")
        pdf.cell(amount_width, height, format_amount(line.amount), border="RB", align="R")
        pdf.set_xy(pdf.l_margin, top + height)
    pdf.ln(3)
    for label, amount in (
        ("Subtotal credited", note.subtotal),
        (f"{note.tax_label} {format_amount(note.tax_rate * 100)}% credited", note.tax),
        (f"Total credited ({note.currency})", note.total),
    ):
        pdf.set_font("Helvetica", "B" if label.startswith("Total") else "", 10)
        pdf.cell(text_width, 6, label, align="R")
        pdf.cell(amount_width, 6, format_amount(amount), align="R", new_x="LMARGIN",
                 new_y="NEXT")
