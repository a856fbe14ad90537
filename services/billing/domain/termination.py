"""Early termination: a circuit disconnected before its term ends pays for the rest of it.

The rule (DESIGN.md, Invoice; README, "Early termination"):
``fee = remaining whole months of the term * mrc * termination_share``, rounded once,
half-up, to the currency's minor unit, on the invoice of the month of the disconnect.

* the term starts on the date of the circuit's activation and ends ``term_months`` later on
  the same day of the month (the month's last day when it is shorter: 31 January + 1 month
  is 28 or 29 February), as the order service shows it (Circuit.term_end_time);
* the remaining whole months are counted from the date of the disconnect: the most months
  that, added to that date, do not pass the term's end (dates in the customer's billing
  time zone); a disconnect on or after the term's end owes nothing;
* mrc and termination_share are the price terms in force at the disconnect.
"""

from __future__ import annotations

import calendar
from datetime import date
from decimal import Decimal

from services.billing.domain.money import EXACT, round_money


def add_months(day: date, months: int) -> date:
    """Same day ``months`` later, or that month's last day when it is shorter."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def term_end(term_start: date, term_months: int) -> date:
    return add_months(term_start, term_months)


def remaining_whole_months(term_start: date, term_months: int, disconnected: date) -> int:
    end = term_end(term_start, term_months)
    if disconnected >= end:
        return 0
    months = (end.year - disconnected.year) * 12 + end.month - disconnected.month
    while months > 0 and add_months(disconnected, months) > end:
        months -= 1
    return months


def termination_fee(
    remaining_months: int, mrc: Decimal, termination_share: Decimal, currency: str
) -> Decimal:
    exact = EXACT.multiply(EXACT.multiply(Decimal(remaining_months), mrc), termination_share)
    return round_money(exact, currency)
