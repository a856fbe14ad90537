"""Credit note documents: CSV and PDF (JSON is the CreditNote message, in the servicer).

The PDF is a :class:`~services.billing.document.Document` rendered by the invoices' renderer
(services/billing/pdf.py), so both documents share the Unicode font, layout and the issuer's
number format.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from services.billing import export, pdf
from services.billing.credit_notes import StoredCreditNote
from services.billing.document import Document, DocumentLine, MoneyFormat, Party
from services.billing.domain.entities import BillingEntity
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


def to_pdf(note: StoredCreditNote, entity: BillingEntity) -> bytes:
    return pdf.render(credit_note_document(note, entity))


def credit_note_document(note: StoredCreditNote, entity: BillingEntity) -> Document:
    money = MoneyFormat(note.currency, entity.locale)
    return Document(
        title="CREDIT NOTE",
        reference=f"Credit note {note.number}",
        issuer=note.issuer_legal_name,
        facts=[
            ("Credit note number", note.number),
            ("Issued", export.local_time(note.issued_at, note.time_zone)),
            ("Credits invoice", f"{note.invoice_number} ({note.invoice_id})"),
            ("Invoice period", f"{note.invoice_month} ({note.time_zone})"),
            ("Currency", note.currency),
            ("Reason", note.reason),
        ],
        parties=[
            Party("From", export.present(note.issuer_legal_name, note.issuer_address,
                                          note.issuer_tax_id)),
            Party("To", export.present(note.customer_legal_name, note.customer_address,
                                        f"Customer id: {note.tenant_id}")),
        ],
        columns=("Credited", "", f"Amount ({note.currency})"),
        lines=[
            DocumentLine(
                text=[(f"{stored.line.circuit_id}: " if stored.line.circuit_id else "")
                      + stored.line.description],
                quantity="",
                amount=money.number(stored.line.amount),
            )
            for stored in note.lines
        ],
        totals=[
            ("Subtotal credited", money.number(note.subtotal), False),
            (f"{note.tax_label} {format_amount(note.tax_rate * 100)}% credited",
             money.number(note.tax), False),
            (f"Total credited ({note.currency})", money.amount(note.total), True),
        ],
    )

