"""Both ends of a circuit reconciled per month, and intervals lost to meter gaps (no I/O).

Per circuit and billing month, each end's usage is summed the same way: its volume (octets
in plus out of its valid 5-minute samples AND of its gap volumes: the counter delta across
missed polls counts for volume, never for the percentile) and its billable 95th percentile
(nearest rank over its valid samples only). The two ends count the same traffic in opposite
directions (what enters the Singapore port leaves the Chongqing one), so in + out and the
larger direction's p95 are compared, which do not depend on the direction's name.

The difference is the other end minus the billed end, and its size relative to the billed
end, in percent. Both figures must be within the tolerance: a volume difference beyond it,
or a p95 difference beyond it, is a difference to report (a warning on the run, evidence on
the invoice line), never a change to the bill. An end with no usage at all while the other
has some is a 100 % difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from services.billing.domain.ends import Side
from services.billing.domain.percentile import Sample, nearest_rank_p95
from services.billing.domain.rating import BillingMonth
from services.common.errors import InvalidArgument

HUNDRED = Fraction(100)


@dataclass(frozen=True)
class GapVolume:
    """The octets of ``intervals`` missed intervals from ``interval_start`` at one end."""

    interval_start: datetime
    interval_seconds: int
    intervals: int
    bytes_in: int
    bytes_out: int
    valid: bool = True

    @property
    def slot_seconds(self) -> int:
        return self.interval_seconds // self.intervals


def intervals_lost(gaps: Iterable[GapVolume], start: datetime, end: datetime) -> int:
    """How many of the gaps' missed intervals start in [start, end)."""
    lost = 0
    for gap in gaps:
        step = timedelta(seconds=gap.slot_seconds)
        lost += sum(start <= gap.interval_start + i * step < end for i in range(gap.intervals))
    return lost


@dataclass(frozen=True)
class EndUsage:
    """One end's usage of a circuit over a month."""

    side: Side
    bytes_in: int
    bytes_out: int
    samples: int
    intervals_lost: int
    # The billable (larger direction's) 95th percentile in Mbps; None without samples.
    p95_mbps: int | None

    @property
    def volume(self) -> int:
        return self.bytes_in + self.bytes_out

    @property
    def metered(self) -> bool:
        return self.samples > 0 or self.volume > 0 or self.intervals_lost > 0


def end_usage(
    side: Side,
    samples: Sequence[Sample],
    gaps: Sequence[GapVolume],
    start: datetime,
    end: datetime,
) -> EndUsage:
    """One end's usage in [start, end): samples and gap volumes starting there."""
    valid = [s for s in samples if s.valid and start <= s.interval_start < end]
    volumes = [g for g in gaps if g.valid and start <= g.interval_start < end]
    result = nearest_rank_p95(valid)
    return EndUsage(
        side=side,
        bytes_in=sum(s.bytes_in for s in valid) + sum(g.bytes_in for g in volumes),
        bytes_out=sum(s.bytes_out for s in valid) + sum(g.bytes_out for g in volumes),
        samples=len(valid),
        intervals_lost=intervals_lost(gaps, start, end),
        p95_mbps=None if result is None else result.billable_mbps,
    )


def parse_tolerance(text: str, where: str) -> Decimal:
    """A tolerance in percent: a decimal from 0 to 100."""
    try:
        value = Decimal(text.strip())
    except ArithmeticError:
        raise InvalidArgument(f"{where}={text!r} is not a number of percent") from None
    if not value.is_finite() or not 0 <= value <= 100:
        raise InvalidArgument(f"{where}={text!r} must be a percentage from 0 to 100")
    return value


def relative_percent(billed: int, other: int) -> Fraction | None:
    """|other - billed| / billed in percent; None (unbounded) when only billed is zero."""
    if billed == other:
        return Fraction(0)
    if billed == 0:
        return None
    return abs(Fraction(other - billed)) * HUNDRED / billed


def percent_text(value: Fraction | None) -> str:
    """Two decimals, half-up ("inf" when unbounded)."""
    if value is None:
        return "inf"
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return str(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Reconciliation:
    """A circuit's two ends over one billing month, and whether they agree."""

    circuit_id: str
    tenant_id: str
    month: BillingMonth
    billed: EndUsage
    other: EndUsage
    tolerance_percent: Decimal

    @property
    def volume_difference_bytes(self) -> int:
        return self.other.volume - self.billed.volume

    @property
    def volume_difference_percent(self) -> Fraction | None:
        return relative_percent(self.billed.volume, self.other.volume)

    @property
    def p95_difference_mbps(self) -> int:
        return (self.other.p95_mbps or 0) - (self.billed.p95_mbps or 0)

    @property
    def p95_difference_percent(self) -> Fraction | None:
        return relative_percent(self.billed.p95_mbps or 0, self.other.p95_mbps or 0)

    @property
    def within_tolerance(self) -> bool:
        limit = Fraction(self.tolerance_percent)
        return all(
            difference is not None and difference <= limit
            for difference in (self.volume_difference_percent, self.p95_difference_percent)
        )

    def describe(self) -> str:
        """One line for a run's warnings and the invoice evidence."""
        verdict = "within" if self.within_tolerance else "OUTSIDE"
        volume_percent = percent_text(self.volume_difference_percent)
        return (
            f"circuit {self.circuit_id} {self.month.year:04d}-{self.month.month:02d}: "
            f"{self.billed.side.name.lower()} end "
            f"(billed) {self.billed.volume} B, p95 {self.billed.p95_mbps or 0} Mbps; "
            f"{self.other.side.name.lower()} end {self.other.volume} B, p95 "
            f"{self.other.p95_mbps or 0} Mbps; difference "
            f"{self.volume_difference_bytes:+d} B ({volume_percent} %), "
            f"{self.p95_difference_mbps:+d} Mbps "
            f"({percent_text(self.p95_difference_percent)} %): {verdict} the "
            f"{self.tolerance_percent} % tolerance"
        )


def reconcile(
    circuit_id: str,
    tenant_id: str,
    month: BillingMonth,
    billed: EndUsage,
    other: EndUsage,
    tolerance_percent: Decimal,
) -> Reconciliation:
    if billed.side is other.side:
        raise ValueError("reconciliation needs the two different ends")
    return Reconciliation(circuit_id, tenant_id, month, billed, other, tolerance_percent)
