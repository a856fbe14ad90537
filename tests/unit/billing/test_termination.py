"""Early termination: remaining whole months of the term * mrc * termination_share."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from idc.events.v1 import circuit_pb2, common_pb2
from services.billing.domain.contracts import (
    ChangeKind,
    ContractChange,
    PriceTerms,
    build_segments,
)
from services.billing.domain.rating import BillingMonth, LineKind, rate_circuit, totals
from services.billing.domain.termination import (
    add_months,
    remaining_whole_months,
    term_end,
    termination_fee,
)
from services.billing.ingest import ContractIngest
from services.common.errors import InvalidArgument

SINGAPORE = ZoneInfo("Asia/Singapore")


@pytest.mark.parametrize(
    ("start", "months", "disconnected", "remaining"),
    [
        (date(2025, 1, 15), 12, date(2025, 3, 10), 10),  # 2025-03-10 + 10 = 2026-01-10
        (date(2025, 1, 15), 12, date(2025, 3, 15), 10),  # exactly 10 months before the end
        (date(2025, 1, 15), 12, date(2025, 3, 20), 9),  # + 10 months is past 2026-01-15
        (date(2025, 1, 15), 12, date(2026, 1, 14), 0),  # one day left: no whole month
        (date(2025, 1, 15), 12, date(2026, 1, 15), 0),  # the term's last day: done
        (date(2025, 1, 15), 12, date(2027, 6, 1), 0),  # after the term
        (date(2025, 1, 31), 1, date(2025, 1, 31), 1),  # day one of a term to 2025-02-28
        (date(2025, 1, 31), 12, date(2025, 2, 28), 11),  # 2025-02-28 + 11 = 2026-01-28
        (date(2024, 2, 29), 24, date(2024, 3, 1), 23),
    ],
)
def test_remaining_whole_months(
    start: date, months: int, disconnected: date, remaining: int
) -> None:
    assert remaining_whole_months(start, months, disconnected) == remaining


def test_term_end_keeps_the_day_or_takes_the_shorter_months_last() -> None:
    assert term_end(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert term_end(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert term_end(date(2025, 11, 30), 3) == date(2026, 2, 28)
    assert add_months(date(2025, 12, 15), 1) == date(2026, 1, 15)


def test_fee_is_rounded_once_half_up_to_the_cent() -> None:
    # 10 * 2180.25 * 0.333 = 7260.2325 -> 7260.23; 7 * 516.38 * 0.5 = 1807.33
    assert termination_fee(10, Decimal("2180.25"), Decimal("0.333"), "SGD") == Decimal("7260.23")
    assert termination_fee(7, Decimal("516.38"), Decimal("0.5"), "SGD") == Decimal("1807.33")
    # 3 * 1000.005 * 0.5 = 1500.0075 -> 1500.01 (one rounding, not per month)
    assert termination_fee(3, Decimal("1000.005"), Decimal("0.5"), "USD") == Decimal("1500.01")
    assert termination_fee(5, Decimal("3240"), Decimal("0.25"), "JPY") == Decimal("4050")


def _price(mrc: str, share: str, term: int = 12) -> PriceTerms:
    return PriceTerms("SGD", Decimal(mrc), Decimal(0), Decimal(0), term,
                      termination_share=Decimal(share))


def _change(kind: ChangeKind, when: datetime, mbps: int, price: PriceTerms) -> ContractChange:
    return ContractChange("c-1", "t-1", kind, when, mbps, price, f"{kind}-{when.isoformat()}")


def test_disconnect_before_the_term_ends_adds_one_line_in_its_month() -> None:
    # Activated 2025-01-15 (Singapore), 12 months to 2026-01-15; upgraded in February to
    # 2180.25; disconnected 2025-03-20: 9 remaining whole months * 2180.25 * 0.5 = 9811.125
    # -> 9811.13, on the March invoice only.
    segments = build_segments([
        _change(ChangeKind.ACTIVATED, datetime(2025, 1, 14, 16, tzinfo=UTC), 50,
                _price("1377.00", "0.5")),
        _change(ChangeKind.MODIFIED, datetime(2025, 2, 9, 16, tzinfo=UTC), 100,
                _price("2180.25", "0.5")),
        _change(ChangeKind.DISCONNECTED, datetime(2025, 3, 19, 16, tzinfo=UTC), 100,
                _price("2180.25", "0.5")),
    ])
    march = rate_circuit(segments, [], BillingMonth(2025, 3), SINGAPORE, "SGD")
    fees = [line for line in march if line.kind is LineKind.TERMINATION]
    assert len(fees) == 1
    assert fees[0].amount == Decimal("9811.13")
    assert fees[0].factor == Decimal("4.5")
    assert "9 remaining whole months" in fees[0].description
    assert "2026-01-15" in fees[0].description
    # MRC 1 to 20 March: 19 days of 31 * 2180.25 = 1336.28 (to the cent)
    mrc = [line for line in march if line.kind is LineKind.MRC]
    assert [line.amount for line in mrc] == [Decimal("1336.28")]
    assert totals(march, Decimal("0.09"), "SGD").subtotal == Decimal("11147.41")
    for other in (BillingMonth(2025, 2), BillingMonth(2025, 4)):
        lines = rate_circuit(segments, [], other, SINGAPORE, "SGD")
        assert not [line for line in lines if line.kind is LineKind.TERMINATION]


def test_no_line_without_a_share_or_after_the_term() -> None:
    for share, disconnect in (("0", datetime(2025, 3, 19, 16, tzinfo=UTC)),
                              ("0.5", datetime(2026, 2, 1, tzinfo=UTC))):
        segments = build_segments([
            _change(ChangeKind.ACTIVATED, datetime(2025, 1, 14, 16, tzinfo=UTC), 50,
                    _price("1377.00", share)),
            _change(ChangeKind.DISCONNECTED, disconnect, 50, _price("1377.00", share)),
        ])
        zone_month = disconnect.astimezone(SINGAPORE)
        month = BillingMonth(zone_month.year, zone_month.month)
        lines = rate_circuit(segments, [], month, SINGAPORE, "SGD")
        assert not [line for line in lines if line.kind is LineKind.TERMINATION]


@pytest.mark.parametrize("share", ["1.5", "-0.5", "half"])
def test_a_circuit_event_with_a_share_outside_0_to_1_is_refused(share: str) -> None:
    event = circuit_pb2.CircuitActivated(
        circuit_id="c-1", tenant_id="t-1", bandwidth_mbps=100,
        price=common_pb2.PriceTerms(currency_code="SGD", term_months=12,
                                    termination_share=share),
    )
    event.effective_time.FromDatetime(datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidArgument) as error:
        ContractIngest().row_for(ChangeKind.ACTIVATED, event, "e-1")
    assert [v.field for v in error.value.violations] == ["price.termination_share"]


def test_a_circuit_event_without_a_share_owes_none() -> None:
    event = circuit_pb2.CircuitActivated(
        circuit_id="c-1", tenant_id="t-1", bandwidth_mbps=100,
        price=common_pb2.PriceTerms(currency_code="SGD", term_months=12),
    )
    event.effective_time.FromDatetime(datetime(2025, 1, 1, tzinfo=UTC))
    assert ContractIngest().row_for(ChangeKind.ACTIVATED, event, "e-1").termination_share == "0"
