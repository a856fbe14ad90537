"""Credit notes: what may still be credited on a finalised invoice, and what a new credit
note credits (lines, net, tax); then how credits reach the customer's next invoices.

The rules (README, "Credit notes"):

* only a FINALIZED invoice is credited, and never beyond what is left on it: the remaining
  creditable net is the invoice's subtotal minus the subtotals of its earlier credit notes;
  a line is creditable up to its amount minus what earlier credit notes credited on it;
* WHOLE credits every line for what is left on it (or, after an amount credit, the
  invoice's remaining net in one line); LINES the chosen lines for what is left on each;
  AMOUNT a net amount in the currency's minor unit, not tied to a line;
* tax is the invoice's rate on the credited net, half-up, cumulatively: a note's tax is
  ``round(rate * net credited up to and with it) - tax credited before it``, so a first
  note is taxed exactly as an invoice, and all of an invoice's notes together credit at
  most the tax it charged (exactly that tax once the whole net is credited);
* a credit note applies to the customer's first invoice of the month of its issue or later
  that was not finalised before it was issued; credit above that invoice's total is
  carried forward to the next one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.billing.domain.money import EXACT, minor_unit, round_money
from services.billing.domain.rating import BillingMonth
from services.common.errors import FailedPrecondition, InvalidArgument


class CreditScope(enum.IntEnum):
    # Values follow idc.billing.v1.CreditScope.
    WHOLE = 1
    LINES = 2
    AMOUNT = 3


@dataclass(frozen=True)
class CreditableLine:
    """An invoice line as a credit note sees it."""

    line_id: str
    circuit_id: str
    description: str
    amount: Decimal


@dataclass(frozen=True)
class CreditRequest:
    scope: CreditScope
    reason: str
    line_ids: Sequence[str] = ()
    amount: Decimal | None = None
    # The amount's currency as given; empty: the invoice's.
    amount_currency: str = ""


@dataclass(frozen=True)
class EarlierCredits:
    """What the invoice's earlier credit notes credited."""

    net: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    by_line: Mapping[str, Decimal] = field(default_factory=dict)
    # True once any earlier note credited an amount not tied to a line.
    any_amount: bool = False


@dataclass(frozen=True)
class CreditLine:
    invoice_line_id: str
    circuit_id: str
    description: str
    amount: Decimal


@dataclass(frozen=True)
class CreditComputation:
    lines: list[CreditLine]
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def compute_credit(
    request: CreditRequest,
    lines: Sequence[CreditableLine],
    invoice_subtotal: Decimal,
    tax_rate: Decimal,
    currency: str,
    earlier: EarlierCredits,
) -> CreditComputation:
    """The credit note ``request`` makes on an invoice with these ``lines``."""
    if not request.reason.strip():
        raise InvalidArgument.for_field("reason", "is required: say why the invoice is credited")
    remaining = invoice_subtotal - earlier.net
    if remaining <= 0:
        raise FailedPrecondition(
            f"nothing is left to credit on this invoice: {earlier.net:f} of its "
            f"{invoice_subtotal:f} {currency} net is credited already"
        )
    credit_lines = _credit_lines(request, lines, remaining, currency, earlier)
    subtotal = sum((line.amount for line in credit_lines), Decimal(0))
    if subtotal <= 0:
        raise FailedPrecondition("the chosen lines have nothing left to credit")
    if subtotal > remaining:
        raise FailedPrecondition(
            f"credit of {subtotal:f} {currency} is more than the {remaining:f} {currency} "
            "net still creditable on the invoice"
        )
    tax = cumulative_tax(earlier.net + subtotal, tax_rate, currency) - earlier.tax
    return CreditComputation(credit_lines, subtotal, tax, subtotal + tax)


def cumulative_tax(net: Decimal, tax_rate: Decimal, currency: str) -> Decimal:
    return round_money(EXACT.multiply(net, tax_rate), currency)


def _credit_lines(
    request: CreditRequest,
    lines: Sequence[CreditableLine],
    remaining: Decimal,
    currency: str,
    earlier: EarlierCredits,
) -> list[CreditLine]:
    if request.scope is CreditScope.AMOUNT:
        if request.amount_currency not in ("", currency):
            raise InvalidArgument.for_field(
                "amount.currency_code",
                f"is {request.amount_currency}, the invoice is in {currency}",
            )
        if request.line_ids:
            raise InvalidArgument.for_field("line_ids", "an AMOUNT credit names no lines")
        amount = _credit_amount(request.amount, currency)
        return [CreditLine("", "", f"Credit: {request.reason.strip()}", amount)]
    if request.amount is not None:
        raise InvalidArgument.for_field("amount", f"a {request.scope.name} credit has no amount")
    if request.scope is CreditScope.WHOLE:
        if request.line_ids:
            raise InvalidArgument.for_field("line_ids", "a WHOLE credit names no lines")
        if earlier.any_amount:
            return [CreditLine("", "", "Credit of the invoice's remaining balance", remaining)]
        chosen = list(lines)
    else:
        chosen = _chosen(request.line_ids, lines)
    result = []
    for line in chosen:
        left = line.amount - earlier.by_line.get(line.line_id, Decimal(0))
        if left:
            result.append(
                CreditLine(line.line_id, line.circuit_id, f"Credit of {line.description}", left)
            )
    return result


def _chosen(line_ids: Sequence[str], lines: Sequence[CreditableLine]) -> list[CreditableLine]:
    if not line_ids:
        raise InvalidArgument.for_field("line_ids", "a LINES credit names at least one line")
    by_id = {line.line_id: line for line in lines}
    if len(set(line_ids)) != len(line_ids):
        raise InvalidArgument.for_field("line_ids", "names a line twice")
    unknown = [i for i in line_ids if i not in by_id]
    if unknown:
        raise InvalidArgument.for_field(
            "line_ids", f"{', '.join(unknown)} is not a line of this invoice"
        )
    chosen = [by_id[i] for i in line_ids]
    negative = [line.line_id for line in chosen if line.amount <= 0]
    if negative:
        raise InvalidArgument.for_field(
            "line_ids", f"{', '.join(negative)} charges nothing (a zero or negative line)"
        )
    return chosen


def _credit_amount(amount: Decimal | None, currency: str) -> Decimal:
    if amount is None:
        raise InvalidArgument.for_field("amount", "is required for an AMOUNT credit")
    if amount <= 0:
        raise InvalidArgument.for_field("amount", "must be positive")
    if amount != round_money(amount, currency):
        raise InvalidArgument.for_field(
            "amount", f"{amount:f} has more decimals than {currency}'s {minor_unit(currency)}"
        )
    return amount


# -- the next invoices' balance ----------------------------------------------------------


@dataclass(frozen=True)
class BalanceInvoice:
    """One of the customer's invoices, for the balance."""

    invoice_id: str
    month: BillingMonth
    total: Decimal
    finalized_at: datetime | None


@dataclass(frozen=True)
class IssuedCredit:
    credit_note_id: str
    # The month of its issue in the customer's billing time zone.
    issue_month: BillingMonth
    issued_at: datetime
    total: Decimal


@dataclass(frozen=True)
class Balance:
    brought_forward: Decimal
    credit_note_ids: list[str]
    credits: Decimal
    applied: Decimal
    amount_due: Decimal
    carried_forward: Decimal


def target_invoice(
    credit: IssuedCredit, invoices: Sequence[BalanceInvoice]
) -> BalanceInvoice | None:
    """The invoice whose balance takes ``credit``: the first of its issue month or later
    not finalised before it was issued (None until the customer has one)."""
    for invoice in sorted(invoices, key=lambda i: i.month):
        if invoice.month < credit.issue_month:
            continue
        if invoice.finalized_at is None or invoice.finalized_at > credit.issued_at:
            return invoice
    return None


def balances(
    invoices: Sequence[BalanceInvoice], credits: Sequence[IssuedCredit]
) -> dict[str, Balance]:
    """Each invoice's balance, oldest first: what it brings forward, takes, leaves due."""
    taken: dict[str, list[IssuedCredit]] = {}
    for credit in sorted(credits, key=lambda c: (c.issued_at, c.credit_note_id)):
        target = target_invoice(credit, invoices)
        if target is not None:
            taken.setdefault(target.invoice_id, []).append(credit)
    result: dict[str, Balance] = {}
    carried = Decimal(0)
    for invoice in sorted(invoices, key=lambda i: i.month):
        mine = taken.get(invoice.invoice_id, [])
        credited = sum((c.total for c in mine), Decimal(0))
        available = carried + credited
        applied = min(available, max(invoice.total, Decimal(0)))
        result[invoice.invoice_id] = Balance(
            brought_forward=carried,
            credit_note_ids=[c.credit_note_id for c in mine],
            credits=credited,
            applied=applied,
            amount_due=invoice.total - applied,
            carried_forward=available - applied,
        )
        carried = available - applied
    return result
