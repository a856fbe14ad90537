"""Both ends reconciled, the billed end, and intervals lost to meter gaps (domain rules)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from services.billing.directory import load_directory
from services.billing.domain.ends import Side, billed_side, side_of
from services.billing.domain.entities import BillingDirectory
from services.billing.domain.percentile import Sample
from services.billing.domain.rating import BillingMonth
from services.billing.domain.reconciliation import (
    EndUsage,
    GapVolume,
    end_usage,
    intervals_lost,
    parse_tolerance,
    percent_text,
    reconcile,
    relative_percent,
)
from services.common.errors import InvalidArgument

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MONTH = BillingMonth(2026, 3)
MBPS = 37_500_000  # octets in 300 s at 1 Mbps


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def end(side: Side, volume: int, p95: int | None, samples: int = 10) -> EndUsage:
    return EndUsage(side, volume, 0, samples, 0, p95)


@pytest.fixture(scope="module")
def directory() -> BillingDirectory:
    return load_directory()


def test_the_billed_end_is_the_billing_entitys_telcos(directory: BillingDirectory) -> None:
    assert billed_side(directory.customer("acme-sg").entity) is Side.SINGAPORE
    assert billed_side(directory.customer("yangtze-cq").entity) is Side.CHONGQING
    assert billed_side(directory.customer("not-listed").entity) is Side.SINGAPORE
    no_telco = replace(directory.entity("sg-telco"), telco="")
    assert billed_side(no_telco) is Side.SINGAPORE
    with pytest.raises(InvalidArgument, match="telco 'hk'"):
        billed_side(replace(no_telco, telco="hk"))
    assert Side.SINGAPORE.other is Side.CHONGQING


def test_an_unspecified_side_is_the_singapore_end() -> None:
    assert side_of(0) is Side.SINGAPORE
    assert side_of(2) is Side.CHONGQING
    with pytest.raises(InvalidArgument, match="side"):
        side_of(7)


def test_intervals_lost_counts_the_missed_slots_inside_the_window() -> None:
    gap = GapVolume(at(10), 4 * 300, 4, 1_000, 0)  # 00:10, 00:15, 00:20, 00:25
    assert gap.slot_seconds == 300
    assert intervals_lost([gap], T0, at(60)) == 4
    assert intervals_lost([gap], at(15), at(25)) == 2
    assert intervals_lost([gap], at(30), at(60)) == 0


def test_an_ends_volume_holds_its_gaps_and_its_p95_only_its_samples() -> None:
    samples = [Sample(at(5 * i), 10 * MBPS, 2 * MBPS) for i in range(10)]
    samples.append(Sample(at(50), 99 * MBPS, 0, valid=False))  # invalid: nowhere
    gaps = [GapVolume(at(60), 900, 3, 500 * MBPS, 0)]  # would be a peak if spread
    usage = end_usage(Side.SINGAPORE, samples, gaps, T0, at(24 * 60))
    assert usage.bytes_in == 100 * MBPS + 500 * MBPS
    assert usage.bytes_out == 20 * MBPS
    assert usage.samples == 10
    assert usage.intervals_lost == 3
    assert usage.p95_mbps == 10
    assert usage.metered


def test_ends_that_agree_are_within_the_tolerance() -> None:
    r = reconcile("c-1", "t", MONTH, end(Side.SINGAPORE, 1_000_000, 80),
                  end(Side.CHONGQING, 1_009_000, 80), Decimal("1"))
    assert r.volume_difference_bytes == 9_000
    assert r.volume_difference_percent == Fraction(9, 10)
    assert r.p95_difference_mbps == 0
    assert r.within_tolerance
    assert "within the 1 % tolerance" in r.describe()


def test_a_volume_or_p95_difference_beyond_the_tolerance_is_outside() -> None:
    billed = end(Side.SINGAPORE, 1_000_000, 100)
    volume = reconcile("c-1", "t", MONTH, billed, end(Side.CHONGQING, 800_000, 100),
                       Decimal("1"))
    assert volume.volume_difference_bytes == -200_000
    assert volume.volume_difference_percent == 20
    assert not volume.within_tolerance
    assert "-200000 B (20.00 %)" in volume.describe() and "OUTSIDE" in volume.describe()
    p95 = reconcile("c-1", "t", MONTH, billed, end(Side.CHONGQING, 1_000_000, 102),
                    Decimal("1"))
    assert (p95.p95_difference_mbps, p95.p95_difference_percent) == (2, 2)
    assert not p95.within_tolerance
    assert reconcile("c-1", "t", MONTH, billed, end(Side.CHONGQING, 1_000_000, 102),
                     Decimal("2")).within_tolerance


def test_an_end_with_no_usage_is_a_full_difference() -> None:
    silent = end(Side.CHONGQING, 0, None, samples=0)
    assert not silent.metered
    r = reconcile("c-1", "t", MONTH, end(Side.SINGAPORE, 5, 1), silent, Decimal("100"))
    assert r.volume_difference_percent == 100
    only_far = reconcile("c-1", "t", MONTH, end(Side.SINGAPORE, 0, None, 0),
                         end(Side.CHONGQING, 5, 1), Decimal("100"))
    assert only_far.volume_difference_percent is None  # unbounded
    assert not only_far.within_tolerance
    assert percent_text(None) == "inf"
    both_idle = reconcile("c-1", "t", MONTH, end(Side.SINGAPORE, 0, None, 0), silent,
                          Decimal("0"))
    assert both_idle.within_tolerance
    with pytest.raises(ValueError, match="two different ends"):
        reconcile("c-1", "t", MONTH, silent, silent, Decimal("1"))


def test_relative_percent_and_its_text() -> None:
    assert relative_percent(3, 4) == Fraction(100, 3)
    assert percent_text(Fraction(100, 3)) == "33.33"
    assert percent_text(Fraction(1, 200)) == "0.01"  # half-up


@pytest.mark.parametrize("text", ["-1", "101", "abc", "NaN", "inf"])
def test_a_bad_tolerance_names_the_setting(text: str) -> None:
    with pytest.raises(InvalidArgument, match="IDC_X"):
        parse_tolerance(text, "IDC_X")


def test_a_tolerance_is_a_decimal_percentage() -> None:
    assert parse_tolerance(" 0.5 ", "IDC_X") == Decimal("0.5")
