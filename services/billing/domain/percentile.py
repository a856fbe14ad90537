"""The industry 95th percentile (nearest rank, never interpolated) of 5-minute samples.

Per direction: rate = bytes * 8 / interval seconds; sort ascending; discard the top
floor(5 * N / 100); the highest remaining, ``sorted[N - floor(5N/100) - 1]``, is that
direction's 95th percentile. The billable rate is the larger direction, in Mbps
(10^6 bit/s) rounded up to a whole Mbps. Gaps are absent samples, never zeros; invalid
samples (e.g. across a counter reset) are left out before N is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

INTERVAL_SECONDS = 300
BITS_PER_MBPS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sample:
    """One valid interval of one circuit."""

    interval_start: datetime
    bytes_in: int
    bytes_out: int
    interval_seconds: int = INTERVAL_SECONDS
    # False e.g. across a counter reset: kept as evidence, never billed.
    valid: bool = True


@dataclass(frozen=True)
class DirectionPercentile:
    sample: Sample
    rate_bps: Fraction

    @property
    def mbps(self) -> int:
        return mbps_rounded_up(self.rate_bps)


@dataclass(frozen=True)
class PercentileResult:
    samples_present: int
    samples_discarded: int
    inbound: DirectionPercentile
    outbound: DirectionPercentile

    @property
    def billed_direction(self) -> str:
        # Ties go to "in": either gives the same billable Mbps.
        return "out" if self.outbound.rate_bps > self.inbound.rate_bps else "in"

    @property
    def billed(self) -> DirectionPercentile:
        return self.outbound if self.billed_direction == "out" else self.inbound

    @property
    def billable_mbps(self) -> int:
        return self.billed.mbps


def discarded_count(samples_present: int) -> int:
    return 5 * samples_present // 100


def billed_index(samples_present: int) -> int:
    """Index of the 95th-percentile sample in the ascending order."""
    return samples_present - discarded_count(samples_present) - 1


def mbps_rounded_up(rate_bps: Fraction) -> int:
    return -(-rate_bps.numerator // (rate_bps.denominator * BITS_PER_MBPS))


def rate_bps(byte_count: int, seconds: int) -> Fraction:
    return Fraction(byte_count * 8, seconds)


def nearest_rank_p95(samples: Sequence[Sample]) -> PercentileResult | None:
    """The 95th percentile of the valid samples, or None when there are none."""
    samples = [s for s in samples if s.valid]
    if not samples:
        return None
    return PercentileResult(
        samples_present=len(samples),
        samples_discarded=discarded_count(len(samples)),
        inbound=_direction(samples, lambda s: s.bytes_in),
        outbound=_direction(samples, lambda s: s.bytes_out),
    )


def _direction(samples: Sequence[Sample], octets: Callable[[Sample], int]) -> DirectionPercentile:
    uniform = len({s.interval_seconds for s in samples}) == 1
    if uniform:
        # Same length everywhere: the byte count orders the rates exactly, and ints sort fast.
        ordered = sorted(samples, key=lambda s: (octets(s), s.interval_start))
    else:
        ordered = sorted(
            samples, key=lambda s: (rate_bps(octets(s), s.interval_seconds), s.interval_start)
        )
    chosen = ordered[billed_index(len(samples))]
    return DirectionPercentile(chosen, rate_bps(octets(chosen), chosen.interval_seconds))


def expected_intervals(start: datetime, end: datetime) -> int:
    """How many 5-minute intervals (aligned to UTC) start in [start, end)."""
    step = INTERVAL_SECONDS * 1_000_000
    first = -(-_epoch_micros(start) // step)
    stop = -(-_epoch_micros(end) // step)
    return max(0, stop - first)


def _epoch_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
