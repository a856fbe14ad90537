"""Rating by the DESIGN.md invoice rules, with the worked example checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from services.billing.domain.contracts import (
    ChangeKind,
    ContractChange,
    PriceTerms,
    build_segments,
)
from services.billing.domain.money import format_amount
from services.billing.domain.percentile import Sample
from services.billing.domain.rating import (
    BillingMonth,
    LineKind,
    adjustment_lines,
    rate_circuit,
    sort_lines,
    totals,
)
from services.common.errors import FailedPrecondition, InvalidArgument
from tests.unit.billing import worked_example as example

MARCH = BillingMonth(2025, 3)


def terms(currency: str, mrc: str, nrc: str = "0", burst: str = "0") -> PriceTerms:
    return PriceTerms(currency, Decimal(mrc), Decimal(nrc), Decimal(burst), 12)


def change(kind: ChangeKind, when: datetime, mbps: int, price: PriceTerms) -> ContractChange:
    return ContractChange("c-1", "t-1", kind, when, mbps, price, f"{kind}-{when.isoformat()}")


def example_changes(prices: example.Prices) -> list[ContractChange]:
    p = prices
    return [
        # Arrival order does not matter: the upgrade first.
        change(ChangeKind.MODIFIED, example.UPGRADE, 500,
               terms(p.currency, p.mrc_500, p.nrc, p.burst_500)),
        change(ChangeKind.ACTIVATED, example.ACTIVATION, 200,
               terms(p.currency, p.mrc_200, p.nrc, p.burst_200)),
    ]


def example_samples() -> list[Sample]:
    return [
        Sample(s.interval_start, s.bytes_in, s.bytes_out, valid=s.valid) for s in example.series()
    ]


@pytest.mark.parametrize(
    ("prices", "zone", "tax_rate", "expected"),
    [
        (example.SGD, "Asia/Singapore", "0.09", example.EXPECTED_SGD),
        (example.CNY, "Asia/Shanghai", "0.06", example.EXPECTED_CNY),
    ],
)
def test_worked_example(
    prices: example.Prices,
    zone: str,
    tax_rate: str,
    expected: tuple[list[tuple[str, str]], tuple[str, str, str]],
) -> None:
    segments = build_segments(example_changes(prices))
    lines = sort_lines(
        rate_circuit(segments, example_samples(), MARCH, ZoneInfo(zone), prices.currency)
    )
    assert [(line.kind.name, format_amount(line.amount)) for line in lines] == expected[0]
    result = totals(lines, Decimal(tax_rate), prices.currency)
    assert (
        format_amount(result.subtotal), format_amount(result.tax), format_amount(result.total)
    ) == expected[1]

    mrc_1, _nrc, burst_1, mrc_2, burst_2 = lines
    assert (mrc_1.days_covered, mrc_1.days_in_month) == (10, 31)
    assert mrc_1.factor == Decimal("0.3225806451612903225806451613")
    assert (mrc_2.days_covered, str(mrc_2.factor)) == (12, "0.3870967741935483870967741935")
    assert burst_1.burst is not None and burst_2.burst is not None
    assert (
        burst_1.burst.samples_expected,
        burst_1.burst.samples_present,
        burst_1.burst.samples_discarded,
        burst_1.burst.billed_sample_mbps,
        burst_1.burst.billed_direction,
        burst_1.burst.overage_mbps,
    ) == (2820, 2807, 140, 260, "in", 60)
    assert burst_1.burst.billed_sample_time == example.ACTIVATION + timedelta(
        minutes=5 * example.BILLED_1
    )
    assert (
        burst_2.burst.samples_expected,
        burst_2.burst.samples_present,
        burst_2.burst.samples_discarded,
        burst_2.burst.billed_sample_mbps,
        burst_2.burst.billed_direction,
        burst_2.burst.overage_mbps,
    ) == (3348, 3348, 167, 521, "out", 21)
    assert burst_2.burst.billed_sample_time == example.UPGRADE + timedelta(
        minutes=5 * example.BILLED_2
    )


SGT = ZoneInfo("Asia/Singapore")


def local(day: int, hour: int = 12, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=SGT).astimezone(UTC)


def test_disconnect_day_is_not_charged_and_nrc_only_in_activation_month() -> None:
    price = terms("SGD", "3100.00", nrc="100.00")
    segments = build_segments(
        [
            change(ChangeKind.ACTIVATED, local(25, month=2), 100, price),
            change(ChangeKind.DISCONNECTED, local(11), 100, price),
        ]
    )
    lines = rate_circuit(segments, [], MARCH, SGT, "SGD")
    # Activated in February: no NRC in March. Dates 1..10 charged, the 11th is not: 10/31.
    assert [(x.kind, x.days_covered, format_amount(x.amount)) for x in lines] == [
        (LineKind.MRC, 10, "1000.00")
    ]
    february = rate_circuit(segments, [], BillingMonth(2025, 2), SGT, "SGD")
    # 25..28 February = 4 of 28 days; NRC once.
    assert [(x.kind, format_amount(x.amount)) for x in february] == [
        (LineKind.NRC, "100.00"), (LineKind.MRC, "442.86")
    ]
    assert rate_circuit(segments, [], BillingMonth(2025, 4), SGT, "SGD") == []


def test_month_boundaries_follow_the_billing_time_zone() -> None:
    # 2025-03-31 20:00 UTC is already 1 April in Singapore: not a March day.
    price = terms("SGD", "3100.00")
    segments = build_segments(
        [change(ChangeKind.ACTIVATED, datetime(2025, 3, 31, 20, tzinfo=UTC), 100, price)]
    )
    assert rate_circuit(segments, [], MARCH, SGT, "SGD") == []
    assert rate_circuit(segments, [], MARCH, ZoneInfo("UTC"), "SGD")[0].days_covered == 1


def test_segment_without_valid_samples_has_no_burst_line() -> None:
    price = terms("SGD", "100.00", burst="5.00")
    segments = build_segments([change(ChangeKind.ACTIVATED, local(1, 0), 100, price)])
    invalid = [Sample(local(2), 10**12, 10**12, valid=False)]
    kinds = [x.kind for x in rate_circuit(segments, invalid, MARCH, SGT, "SGD")]
    assert kinds == [LineKind.MRC]


def test_burst_line_at_or_under_cir_is_zero_but_shows_its_evidence() -> None:
    price = terms("SGD", "100.00", burst="5.00")
    segments = build_segments([change(ChangeKind.ACTIVATED, local(1, 0), 100, price)])
    lines = rate_circuit(segments, [Sample(local(2), 10, 10)], MARCH, SGT, "SGD")
    burst = lines[-1]
    assert burst.kind is LineKind.BURST and burst.amount == Decimal("0.00")
    assert burst.burst is not None and burst.burst.overage_mbps == 0
    assert burst.burst.samples_expected == 8928


def test_tax_is_rounded_half_up_once_on_the_subtotal() -> None:
    lines = rate_circuit(
        build_segments([change(ChangeKind.ACTIVATED, local(1, 0), 1, terms("SGD", "1000.50"))]),
        [], MARCH, SGT, "SGD",
    )
    result = totals(lines, Decimal("0.09"), "SGD")
    # 1000.50 * 0.09 = 90.045 -> 90.05 (banker's rounding would give 90.04).
    assert (result.subtotal, result.tax, result.total) == (
        Decimal("1000.50"), Decimal("90.05"), Decimal("1090.55")
    )


def test_currency_mismatch_is_refused_with_a_reason() -> None:
    segments = build_segments([change(ChangeKind.ACTIVATED, local(1), 1, terms("CNY", "1"))])
    with pytest.raises(FailedPrecondition, match=r"priced in CNY but .* invoiced in SGD"):
        rate_circuit(segments, [], MARCH, SGT, "SGD")


def test_bad_month_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"month\.month"):
        BillingMonth(2025, 13)


def test_adjustments_are_differences_from_what_was_billed() -> None:
    price = terms("SGD", "3100.00", burst="10.00")
    segments = build_segments([change(ChangeKind.ACTIVATED, local(1, 0), 100, price)])
    before = rate_circuit(segments, [Sample(local(2), 37_500_000 * 100, 0)], MARCH, SGT, "SGD")
    late = Sample(local(3), 37_500_000 * 130, 0)  # 130 Mbps arrives after finalisation
    after = rate_circuit(
        segments, [Sample(local(2), 37_500_000 * 100, 0), late], MARCH, SGT, "SGD"
    )
    original = {line.key: line for line in before}
    billed = {line.key: line.amount for line in before}
    adjustments = adjustment_lines("inv-1", "SG-2025-03-000001", original, billed, after)
    # Two samples: none discarded, p95 = 130 Mbps, overage 30 * 10.00 = 300.00 more.
    assert [(x.kind, x.amount, x.adjusts_line_key) for x in adjustments] == [
        (LineKind.ADJUSTMENT, Decimal("300.00"), before[1].key)
    ]
    # Once that adjustment is billed, nothing more is owed.
    billed[before[1].key] += Decimal("300.00")
    assert adjustment_lines("inv-1", "SG-2025-03-000001", original, billed, after) == []
