"""The price preview of a change (services/order/domain/preview.py), and its agreement with
the rules billing invoices by (services/billing/domain), which it mirrors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from services.billing.domain import money as billing_money
from services.billing.domain import termination as billing_termination
from services.billing.domain.contracts import ChangeKind, ContractChange, build_segments
from services.billing.domain.contracts import PriceTerms as BillingPrice
from services.billing.domain.rating import BillingMonth, LineKind, rate_circuit
from services.order.domain.preview import (
    MINOR_UNITS,
    PricedCircuit,
    add_months,
    month_proration,
    preview_change,
    remaining_whole_months,
    round_money,
    termination_fee,
)

DATES = [date(2026, 1, 31), date(2026, 2, 28), date(2024, 2, 29), date(2026, 12, 15),
         date(2026, 3, 1), date(2025, 11, 30)]


def circuit(activated: date, mrc: str = "1000.00", term: int = 12,
            currency: str = "SGD") -> PricedCircuit:
    return PricedCircuit(activated, term, currency, Decimal(mrc), Decimal("0.50"))


def test_a_disconnect_before_the_term_end_owes_the_remaining_whole_months() -> None:
    preview = preview_change(circuit(date(2026, 1, 31)), date(2026, 6, 15), None)
    assert preview.term_end == date(2027, 1, 31)
    assert preview.remaining_term_months == 7  # 15 June + 7 months = 15 January 2027
    assert preview.termination_fee == Decimal("3500.00")  # 7 * 1000.00 * 0.50
    month = preview.proration
    # 1 to 14 June at the current MRC; the day of the disconnect is not charged.
    assert (month.month, month.days_in_month, month.current_days, month.new_days) == (
        "2026-06", 30, 14, 0)
    assert (month.current_amount, month.new_amount, month.total) == (
        Decimal("466.67"), Decimal("0.00"), Decimal("466.67"))


def test_a_bandwidth_change_splits_the_month_and_owes_no_fee() -> None:
    preview = preview_change(circuit(date(2025, 3, 10)), date(2026, 2, 10), Decimal("1700.00"))
    month = preview.proration
    # 1 to 9 February at 1000.00, 10 to 28 February (the day of the change too) at 1700.00.
    assert (month.current_days, month.new_days, month.days_in_month) == (9, 19, 28)
    assert (month.current_amount, month.new_amount) == (Decimal("321.43"), Decimal("1153.57"))
    assert month.total == Decimal("1475.00")
    assert (preview.termination_fee, preview.remaining_term_months) == (Decimal("0.00"), 1)


def test_the_month_of_the_activation_starts_at_the_activation() -> None:
    month = month_proration(date(2026, 4, 20), date(2026, 4, 11), Decimal("300"),
                            Decimal("600"), "USD")
    assert (month.current_days, month.new_days) == (9, 11)
    assert (month.current_amount, month.new_amount) == (Decimal("90.00"), Decimal("220.00"))


def test_on_or_after_the_term_end_a_disconnect_owes_nothing() -> None:
    for day in (date(2027, 1, 31), date(2027, 3, 1)):
        preview = preview_change(circuit(date(2026, 1, 31)), day, None)
        assert (preview.remaining_term_months, preview.termination_fee) == (0, Decimal("0.00"))


def test_a_datetime_keeps_its_time_of_day_when_months_are_added() -> None:
    moment = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    assert add_months(moment, 1) == datetime(2026, 2, 28, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("start", DATES)
@pytest.mark.parametrize("term", [1, 12, 24, 36])
def test_term_rules_agree_with_billing(start: date, term: int) -> None:
    assert add_months(start, term) == billing_termination.term_end(start, term)
    for offset in (0, 1, 27, 28, 29, 30, 31, 200, 364, 365, 800):
        day = start + timedelta(days=offset)
        months = remaining_whole_months(start, term, day)
        assert months == billing_termination.remaining_whole_months(start, term, day)
        for mrc, share, currency in (("382.50", "0.50", "SGD"), ("1000", "0.333", "USD"),
                                     ("45000", "0.25", "JPY")):
            assert termination_fee(months, Decimal(mrc), Decimal(share), currency) \
                == billing_termination.termination_fee(months, Decimal(mrc), Decimal(share),
                                                       currency)


def test_rounding_agrees_with_billing() -> None:
    assert MINOR_UNITS == billing_money.MINOR_UNITS
    for value in ("2.675", "2.665", "-40.505", "0.004999", "12345.5"):
        for currency in MINOR_UNITS:
            assert round_money(Decimal(value), currency) \
                == billing_money.round_money(Decimal(value), currency)


def billed(activated: datetime, effective: datetime, new_mrc: str | None,
           zone: ZoneInfo) -> tuple[list[Decimal], Decimal]:
    """What billing invoices for the month of ``effective``: its MRC lines, in order, and
    its early-termination line (0 when none), for a change (or a disconnect) then."""
    price = BillingPrice("SGD", Decimal("1000.00"), Decimal("500.00"), Decimal(0), 12, "v",
                         termination_share=Decimal("0.50"))
    changes = [ContractChange("cct-1", "acme", ChangeKind.ACTIVATED, activated, 100, price,
                              "e1")]
    if new_mrc is None:
        changes.append(ContractChange("cct-1", "acme", ChangeKind.DISCONNECTED, effective,
                                      100, price, "e2"))
    else:
        changes.append(ContractChange("cct-1", "acme", ChangeKind.MODIFIED, effective, 200,
                                      replace(price, mrc=Decimal(new_mrc)), "e2"))
    local = effective.astimezone(zone)
    lines = rate_circuit(build_segments(changes), [], BillingMonth(local.year, local.month),
                         zone, "SGD")
    fees = [line.amount for line in lines if line.kind is LineKind.TERMINATION]
    return ([line.amount for line in lines if line.kind is LineKind.MRC],
            fees[0] if fees else Decimal("0.00"))


@pytest.mark.parametrize("zone", ["UTC", "Asia/Singapore", "America/New_York"])
@pytest.mark.parametrize("new_mrc", [None, "1700.00", "382.50"])
@pytest.mark.parametrize(("activated", "effective"), [
    (datetime(2025, 3, 10, 12, tzinfo=UTC), datetime(2026, 2, 10, 3, tzinfo=UTC)),
    (datetime(2026, 4, 11, 1, tzinfo=UTC), datetime(2026, 4, 20, 23, tzinfo=UTC)),
    (datetime(2026, 1, 31, 16, tzinfo=UTC), datetime(2026, 6, 15, 17, tzinfo=UTC)),
    (datetime(2024, 1, 31, 8, tzinfo=UTC), datetime(2024, 2, 29, 8, tzinfo=UTC)),
    (datetime(2026, 12, 2, 10, tzinfo=UTC), datetime(2026, 12, 2, 10, 5, tzinfo=UTC)),
])
def test_the_preview_is_what_billing_invoices_for_the_month(
    activated: datetime, effective: datetime, new_mrc: str | None, zone: str,
) -> None:
    tz = ZoneInfo(zone)
    preview = preview_change(
        PricedCircuit(activated.astimezone(tz).date(), 12, "SGD", Decimal("1000.00"),
                      Decimal("0.50")),
        effective.astimezone(tz).date(), None if new_mrc is None else Decimal(new_mrc))
    lines, fee = billed(activated, effective, new_mrc, tz)
    month = preview.proration
    shown = [amount for days, amount in ((month.current_days, month.current_amount),
                                         (month.new_days, month.new_amount)) if days]
    assert shown == lines
    assert month.total == sum(lines, Decimal("0.00"))
    assert preview.termination_fee == fee
