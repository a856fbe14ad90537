"""The price of a change before it is ordered: the new MRC, this month's proration and any
early-termination fee, as billing will compute them (README, "Credit notes and early
termination"; shared/DESIGN.md, Invoice).

Billing's rules live in services/billing/domain (rating.py, termination.py, money.py); the
order service does not import another service, so the few pure rules a preview needs are
mirrored here, and tests/unit/order/test_preview.py checks that both agree on the same
cases. Dates are calendar dates in the customer's billing time zone.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import TypeVar

# ISO 4217 exponents, as billing rounds (services/billing/domain/money.py).
MINOR_UNITS: dict[str, int] = {"SGD": 2, "USD": 2, "CNY": 2, "JPY": 0}

# Far more digits than a price times a factor needs: the one rounding is to the minor unit.
EXACT = Context(prec=60, rounding=ROUND_HALF_UP)

Day = TypeVar("Day", bound=date)


def round_money(value: Decimal, currency: str) -> Decimal:
    """Half-up to the currency's minor unit (2.675 SGD -> 2.68)."""
    exponent = Decimal(1).scaleb(-MINOR_UNITS[currency])
    return value.quantize(exponent, rounding=ROUND_HALF_UP, context=EXACT)


def add_months(day: Day, months: int) -> Day:
    """Same day ``months`` later, or that month's last day when it is shorter (31 January
    + 1 month is 28 or 29 February); a datetime keeps its time of day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month,
                       day=min(day.day, calendar.monthrange(year, month)[1]))


def remaining_whole_months(term_start: date, term_months: int, on: date) -> int:
    """The most months that, added to ``on``, do not pass the term's end; 0 on or after it."""
    end = add_months(term_start, term_months)
    if on >= end:
        return 0
    months = (end.year - on.year) * 12 + end.month - on.month
    while months > 0 and add_months(on, months) > end:
        months -= 1
    return months


def termination_fee(remaining_months: int, mrc: Decimal, termination_share: Decimal,
                    currency: str) -> Decimal:
    exact = EXACT.multiply(EXACT.multiply(Decimal(remaining_months), mrc), termination_share)
    return round_money(exact, currency)


def prorate(monthly: Decimal, days: int, days_in_month: int, currency: str) -> Decimal:
    """``monthly * days / days_in_month``, exact until the one rounding."""
    exact = EXACT.divide(EXACT.multiply(monthly, Decimal(days)), Decimal(days_in_month))
    return round_money(exact, currency)


@dataclass(frozen=True)
class MonthProration:
    month: str  # YYYY-MM
    days_in_month: int
    current_days: int
    current_amount: Decimal
    new_days: int
    new_amount: Decimal

    @property
    def total(self) -> Decimal:
        return self.current_amount + self.new_amount


def month_proration(effective: date, activated: date, current_mrc: Decimal,
                    new_mrc: Decimal | None, currency: str) -> MonthProration:
    """The month of ``effective`` split there: the days from its first day (or from the
    activation, when later) up to ``effective`` at the current MRC, the rest of the month
    at ``new_mrc``; None for a disconnect, after which nothing is charged (its day neither)."""
    days_in_month = calendar.monthrange(effective.year, effective.month)[1]
    start = max(effective.replace(day=1), activated)
    current_days = max(0, (effective - start).days)
    new_days = 0 if new_mrc is None else days_in_month - effective.day + 1
    return MonthProration(
        month=f"{effective.year:04d}-{effective.month:02d}", days_in_month=days_in_month,
        current_days=current_days,
        current_amount=prorate(current_mrc, current_days, days_in_month, currency),
        new_days=new_days,
        new_amount=prorate(new_mrc or Decimal(0), new_days, days_in_month, currency))


@dataclass(frozen=True)
class ChangePreview:
    effective: date
    proration: MonthProration
    termination_fee: Decimal
    remaining_term_months: int
    term_end: date


@dataclass(frozen=True)
class PricedCircuit:
    """What a preview needs of the circuit: its contract and when it was activated."""

    activated: date
    term_months: int
    currency: str
    mrc: Decimal
    termination_share: Decimal


def preview_change(circuit: PricedCircuit, effective: date, new_mrc: Decimal | None
                   ) -> ChangePreview:
    """A bandwidth change to ``new_mrc``, or a disconnect (``new_mrc`` None, which alone
    owes the early-termination fee), taking effect on ``effective``."""
    months = remaining_whole_months(circuit.activated, circuit.term_months, effective)
    fee = Decimal(0) if new_mrc is not None else termination_fee(
        months, circuit.mrc, circuit.termination_share, circuit.currency)
    return ChangePreview(
        effective=effective,
        proration=month_proration(effective, circuit.activated, circuit.mrc, new_mrc,
                                  circuit.currency),
        termination_fee=round_money(fee, circuit.currency), remaining_term_months=months,
        term_end=add_months(circuit.activated, circuit.term_months))
