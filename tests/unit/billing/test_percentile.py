"""Nearest-rank 95th percentile: discard the top floor(5N/100), take the highest remaining."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from services.billing.domain.percentile import (
    Sample,
    expected_intervals,
    nearest_rank_p95,
)

START = datetime(2025, 4, 1, tzinfo=UTC)
BYTES_PER_MBPS = 37_500_000  # 1 Mbps for 300 s = 10^6 * 300 / 8 bytes


def at(index: int) -> datetime:
    return START + timedelta(minutes=5 * index)


def test_design_example_twenty_samples() -> None:
    inbound = [40, 42, 45, 41, 44, 43, 46, 120, 47, 48, 44, 45, 43, 42, 41, 250, 46, 47, 45, 44]
    outbound = [20, 22, 21, 25, 23, 24, 22, 30, 26, 27, 25, 24, 23, 22, 21, 90, 28, 26, 25, 24]
    samples = [
        Sample(at(i), i_mbps * BYTES_PER_MBPS, o_mbps * BYTES_PER_MBPS)
        for i, (i_mbps, o_mbps) in enumerate(zip(inbound, outbound, strict=True))
    ]
    result = nearest_rank_p95(samples)
    assert result is not None
    # N = 20: floor(5 * 20 / 100) = 1 discarded; sorted[20 - 1 - 1] is the second largest.
    assert (result.samples_present, result.samples_discarded) == (20, 1)
    assert result.inbound.mbps == 120  # an interpolating percentile would say 126.5
    assert result.outbound.mbps == 30
    assert result.billable_mbps == 120
    assert result.billed_direction == "in"
    assert result.billed.sample.interval_start == at(7)
    assert result.billed.rate_bps == Fraction(120_000_000)


def _shuffled_ranks(count: int, seed: int) -> list[int]:
    ranks = list(range(1, count + 1))
    random.Random(seed).shuffle(ranks)
    return ranks


def test_full_thirty_day_month_8640_samples() -> None:
    # Inbound rates are 1..8640 Mbps in random order, outbound half of that.
    ranks = _shuffled_ranks(8640, seed=30)
    samples = [
        Sample(at(i), r * BYTES_PER_MBPS, r * BYTES_PER_MBPS // 2) for i, r in enumerate(ranks)
    ]
    result = nearest_rank_p95(samples)
    assert result is not None
    # floor(5 * 8640 / 100) = 432 discarded; sorted[8640 - 432 - 1] = the 8208th smallest.
    assert result.samples_discarded == 432
    assert result.inbound.mbps == 8208
    assert result.outbound.mbps == 4104
    assert result.billable_mbps == 8208
    assert result.billed.sample.interval_start == at(ranks.index(8208))


def test_31_day_month_with_gaps_and_a_counter_reset() -> None:
    assert expected_intervals(START, START + timedelta(days=31)) == 8928
    ranks = _shuffled_ranks(8928, seed=31)
    gaps = set(range(1000, 1100))  # 100 missing polls: absent, not zero
    samples = [
        Sample(at(i), r * BYTES_PER_MBPS, BYTES_PER_MBPS)
        for i, r in enumerate(ranks)
        if i not in gaps
    ]
    # A counter reset: a huge bogus value, flagged invalid by the meter, must not count.
    samples.append(Sample(at(1000), 10**15, 10**15, valid=False))
    present_ranks = sorted(r for i, r in enumerate(ranks) if i not in gaps)
    result = nearest_rank_p95(samples)
    assert result is not None
    # N = 8828 valid samples; floor(5 * 8828 / 100) = 441 discarded; index 8828 - 441 - 1.
    assert result.samples_present == 8828
    assert result.samples_discarded == 441
    assert result.inbound.mbps == present_ranks[8828 - 441 - 1]
    assert result.billable_mbps == present_ranks[8386]


def test_rate_is_rounded_up_to_a_whole_mbps() -> None:
    # 259.2 Mbps is billed as 260; exactly 259 Mbps stays 259.
    assert nearest_rank_p95([Sample(at(0), 9_720_000_000, 0)]).billable_mbps == 260  # type: ignore[union-attr]
    assert nearest_rank_p95([Sample(at(0), 259 * BYTES_PER_MBPS, 0)]).billable_mbps == 259  # type: ignore[union-attr]


def test_outbound_wins_when_larger() -> None:
    samples = [Sample(at(i), 10 * BYTES_PER_MBPS, (i + 1) * BYTES_PER_MBPS) for i in range(20)]
    result = nearest_rank_p95(samples)
    assert result is not None
    assert (result.billed_direction, result.billable_mbps) == ("out", 19)


def test_no_valid_sample_gives_no_percentile() -> None:
    assert nearest_rank_p95([]) is None
    assert nearest_rank_p95([Sample(at(0), 1, 1, valid=False)]) is None


def test_shorter_intervals_are_rated_by_their_own_length() -> None:
    # 1,000,000 bytes in 60 s is 133,333.3 bit/s; 2,000,000 in 300 s is 53,333.3 bit/s.
    samples = [Sample(at(0), 2_000_000, 0), Sample(at(1), 1_000_000, 0, interval_seconds=60)]
    result = nearest_rank_p95(samples)
    assert result is not None
    assert result.inbound.rate_bps == Fraction(8_000_000, 60)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (START, START + timedelta(days=30), 8640),
        (START + timedelta(minutes=1), START + timedelta(minutes=10), 1),  # only :05 starts
        (START, START, 0),
        (START + timedelta(minutes=5), START, 0),
    ],
)
def test_expected_intervals(start: datetime, end: datetime, expected: int) -> None:
    assert expected_intervals(start, end) == expected
