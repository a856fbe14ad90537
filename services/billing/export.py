"""Invoice documents: CSV (lines and totals in columns of their own) and PDF.

The CSV has one row per invoice line with its amount in ``line_amount``, then one ``totals``
row whose subtotal, tax and total stand in columns of their own: summing ``line_amount``
gives the subtotal, never the bill twice. The PDF is the invoice as a Document
(services/billing/document.py) rendered by services/billing/pdf.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from services.billing import pdf
from services.billing.document import Document, DocumentLine, MoneyFormat, Party, Section
from services.billing.domain.credit_notes import Balance
from services.billing.domain.entities import BillingEntity
from services.billing.domain.money import format_amount
from services.billing.domain.rating import Line, LineKind
from services.billing.invoices import InvoiceState, StoredInvoice

CSV_COLUMNS = [
    "row", "line_id", "kind", "circuit_id", "purchase_order", "description", "period_first_day",
    "period_last_day", "days_covered", "days_in_month", "proration", "unit_price",
    "bandwidth_mbps", "samples_expected", "samples_present", "samples_discarded",
    "billed_sample_mbps", "billed_sample_time", "billed_direction", "samples_in_boost",
    "boost_id", "added_mbps", "started_hours", "adjusts_invoice_id",
    "currency", "line_amount", "subtotal", "tax_rate", "tax", "total", "credit_applied",
    "amount_due",
]
# Not charged by days of the month (a boost is by started hours).
_UNPRORATED = (LineKind.NRC, LineKind.TERMINATION, LineKind.BOOST)


def file_stem(invoice: StoredInvoice) -> str:
    return invoice.number or f"DRAFT-{invoice.tenant_id}-{invoice.month}"


def first_and_last_day(line: Line, zone: str) -> tuple[date, date]:
    """A line's period as dates in the billing time zone, both ends inclusive."""
    local = ZoneInfo(zone)
    first = line.segment_start.astimezone(local).date()
    # The segment's end is the first instant not covered: the day before is the last billed.
    last = line.segment_end.astimezone(local).date() - timedelta(days=1)
    return first, max(first, last)


def proration(line: Line) -> str:
    return f"{line.days_covered}/{line.days_in_month}"


def to_csv(
    invoice: StoredInvoice, purchase_orders: Mapping[str, str], credit: Balance | None = None
) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for stored in invoice.lines:
        line, burst, boost = stored.line, stored.line.burst, stored.line.boost
        first, last = first_and_last_day(line, invoice.time_zone)
        writer.writerow({
            "row": "line", "line_id": stored.id, "kind": line.kind.name,
            "circuit_id": line.circuit_id,
            "purchase_order": purchase_orders.get(line.circuit_id, ""),
            "description": line.description,
            "period_first_day": first.isoformat(), "period_last_day": last.isoformat(),
            "days_covered": line.days_covered, "days_in_month": line.days_in_month,
            "proration": "" if line.kind in _UNPRORATED else proration(line),
            "unit_price": format_amount(line.unit_price),
            "bandwidth_mbps": line.bandwidth_mbps,
            "samples_expected": "" if burst is None else burst.samples_expected,
            "samples_present": "" if burst is None else burst.samples_present,
            "samples_discarded": "" if burst is None else burst.samples_discarded,
            "billed_sample_mbps": "" if burst is None else burst.billed_sample_mbps,
            "billed_sample_time": "" if burst is None else burst.billed_sample_time.isoformat(),
            "billed_direction": "" if burst is None else burst.billed_direction,
            "samples_in_boost": "" if burst is None else burst.samples_in_boost,
            "boost_id": "" if boost is None else boost.boost_id,
            "added_mbps": "" if boost is None else boost.added_mbps,
            "started_hours": "" if boost is None else boost.started_hours,
            "adjusts_invoice_id": line.adjusts_invoice_id,
            "currency": invoice.currency, "line_amount": format_amount(line.amount),
        })
    writer.writerow({
        "row": "totals", "currency": invoice.currency,
        "subtotal": format_amount(invoice.subtotal),
        "tax_rate": format_amount(invoice.tax_rate), "tax": format_amount(invoice.tax),
        "total": format_amount(invoice.total),
        "credit_applied": "" if credit is None else format_amount(credit.applied),
        "amount_due": format_amount(_amount_due(invoice, credit)),
    })
    return out.getvalue().encode("utf-8")



def _amount_due(invoice: StoredInvoice, credit: Balance | None) -> Decimal:
    return invoice.total if credit is None else credit.amount_due


def to_pdf(
    invoice: StoredInvoice, entity: BillingEntity, purchase_orders: Mapping[str, str],
    credit: Balance | None = None,
) -> bytes:
    return pdf.render(invoice_document(invoice, entity, purchase_orders, credit))


def invoice_document(
    invoice: StoredInvoice, entity: BillingEntity, purchase_orders: Mapping[str, str],
    credit: Balance | None = None,
) -> Document:
    money = MoneyFormat(invoice.currency, entity.locale)
    draft = invoice.state is not InvoiceState.FINALIZED
    references = sorted({purchase_orders[c] for c in _circuits(invoice) if c in purchase_orders})
    return Document(
        title="DRAFT INVOICE (not payable)" if draft else "TAX INVOICE",
        reference=f"Invoice {file_stem(invoice)}",
        issuer=invoice.issuer_legal_name,
        facts=_facts(invoice, entity, references),
        parties=[
            Party("From", present(invoice.issuer_legal_name, invoice.issuer_address,
                                   invoice.issuer_tax_id)),
            Party("Bill to", present(invoice.customer_legal_name, invoice.customer_address,
                                      f"Customer id: {invoice.tenant_id}")),
        ],
        columns=("Description", "Days", f"Amount ({invoice.currency})"),
        lines=[
            _document_line(stored.line, invoice, money, purchase_orders, len(references) > 1)
            for stored in invoice.lines
        ],
        totals=[
            ("Subtotal", money.number(invoice.subtotal), False),
            (f"{invoice.tax_label} {format_amount(invoice.tax_rate * 100)}%",
             money.number(invoice.tax), False),
            *_total_rows(invoice, credit, money),
        ],
        sections=[_payment(invoice, entity, money, _amount_due(invoice, credit))],
        fine_print=(
            "Periods are calendar days in the billing time zone, first and last day both "
            "included; days is days covered / days in the month. Burst: 95th percentile "
            "(nearest rank) of the segment's valid 5-minute samples, per direction, the larger "
            "direction, rounded up to a whole Mbps; overage above the CIR times the burst "
            "price times days covered / days in month; samples taken while a boost was in "
            "force count only above the boosted rate. Boost: the boost price per Mbps-hour "
            "times the added Mbps times the started hours of the time it was both booked "
            "and in force, each hour billed in the month it starts in. Each line is rounded "
            "once, half-up; tax is on the subtotal."
        ),
    )


def _circuits(invoice: StoredInvoice) -> list[str]:
    return [stored.line.circuit_id for stored in invoice.lines]


def present(*parts: str) -> list[str]:
    return [part for part in parts if part]


def _issue_date(invoice: StoredInvoice) -> date | None:
    if invoice.finalized_at is None:
        return None
    return invoice.finalized_at.astimezone(ZoneInfo(invoice.time_zone)).date()


def _terms_days(invoice: StoredInvoice, entity: BillingEntity, issued: date | None) -> int:
    # The terms the invoice was issued under (its due date is fixed on finalisation); the
    # entity's current terms for a draft and for invoices finalised before migration 0009.
    if issued is not None and invoice.due_date is not None:
        return (invoice.due_date - issued).days
    return entity.payment_terms_days


def _facts(
    invoice: StoredInvoice, entity: BillingEntity, references: list[str]
) -> list[tuple[str, str]]:
    issued = _issue_date(invoice)
    days = _terms_days(invoice, entity, issued)
    month_first = invoice.month.first_day
    month_last = invoice.month.next.first_day - timedelta(days=1)
    return [
        ("Invoice number", invoice.number or "(assigned on finalisation)"),
        ("Issue date", "not issued (draft)" if issued is None else issued.isoformat()),
        ("Due date", "(set on issue)" if issued is None
         else (issued + timedelta(days=days)).isoformat()),
        ("Payment terms", f"Net {days} days from the issue date" if days else "Due on receipt"),
        ("Your PO / reference", ", ".join(references) or "none given"),
        ("Billing period", f"{month_first.isoformat()} to {month_last.isoformat()} "
                           f"({invoice.time_zone})"),
        ("Currency", invoice.currency),
        ("Usage as of", local_time(invoice.as_of_time, invoice.time_zone)),
        ("Invoice id", invoice.id),
    ]


def _total_rows(
    invoice: StoredInvoice, credit: Balance | None, money: MoneyFormat
) -> list[tuple[str, str, bool]]:
    """The total, and where credit notes apply to the invoice (README, credit notes), the
    credit taken off it and what is left to pay; the invoice's own total never changes."""
    if credit is None or not credit.applied:
        return [(f"Total due ({invoice.currency})", money.amount(invoice.total), True)]
    return [
        (f"Total ({invoice.currency})", money.number(invoice.total), False),
        ("Credit applied from credit notes", "-" + money.number(credit.applied), False),
        (f"Amount due ({invoice.currency})", money.amount(credit.amount_due), True),
    ]


def _payment(
    invoice: StoredInvoice, entity: BillingEntity, money: MoneyFormat, due: Decimal
) -> Section:
    quote = invoice.number or "the invoice number (assigned on finalisation)"
    return Section(
        "Remittance details",
        [
            *entity.remittance.lines(),
            f"Please pay {money.amount(due)} quoting {quote}; bank charges are the payer's.",
        ],
    )


def local_time(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def _document_line(
    line: Line,
    invoice: StoredInvoice,
    money: MoneyFormat,
    purchase_orders: Mapping[str, str],
    show_reference: bool,
) -> DocumentLine:
    text = [f"{line.circuit_id}: {line.description}"]
    if line.kind is LineKind.NRC:
        text.append(f"unit price {money.number(line.unit_price)}")
    elif line.boost is not None:
        boost = line.boost
        text.append(
            f"{boost.started_hours} started hours x {boost.added_mbps} Mbps at "
            f"{money.number(line.unit_price)} per Mbps-hour; booked "
            f"{local_time(boost.booked_start, invoice.time_zone)} to "
            f"{local_time(boost.booked_end, invoice.time_zone)}"
        )
    elif line.kind is not LineKind.TERMINATION:  # its description says the months and share
        unit = "per Mbps of overage a month" if line.kind is LineKind.BURST else "a month"
        text.append(f"{proration(line)} days of the month at {money.number(line.unit_price)} "
                    f"{unit}")
    if show_reference and line.circuit_id in purchase_orders:
        text.append(f"PO / reference {purchase_orders[line.circuit_id]}")
    if line.burst is not None:
        b = line.burst
        text.append(
            f"samples expected {b.samples_expected}, present {b.samples_present}, "
            f"discarded {b.samples_discarded}; billed sample {b.billed_sample_mbps} Mbps "
            f"({b.billed_direction}) at {local_time(b.billed_sample_time, invoice.time_zone)}; "
            f"CIR {b.cir_mbps} Mbps, overage {b.overage_mbps} Mbps"
        )
        if b.samples_in_boost:
            text.append(f"samples during a boost, counted above the boosted rate "
                        f"{b.samples_in_boost}")
    if line.burst is not None and line.burst.intervals_lost:
        text.append(f"intervals lost to meter gaps {line.burst.intervals_lost}")
    if line.reconciliation:
        text.append(f"ends differ: {line.reconciliation}")
    if line.adjusts_invoice_id:
        text.append(f"corrects invoice {line.adjusts_invoice_id}")
    return DocumentLine(
        text=text,
        quantity=(
            f"{line.boost.started_hours} h" if line.boost is not None
            else "" if line.kind in _UNPRORATED else proration(line)
        ),
        amount=money.number(line.amount),
    )
