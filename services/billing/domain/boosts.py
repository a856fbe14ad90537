"""Boosts: time-boxed bandwidth increases, billed per started hour (README, Boosts).

A boost is booked for [start_time, end_time) and in force on the routers from its raising
change's effective time to its revert's, or to the circuit's disconnect. It is billed for
the time it was both booked and in force: from the later of start_time and the raise to
the earlier of end_time, the revert and the disconnect; a revert that never arrives is
capped at end_time, so a late revert is never charged. Started hours are counted from the
billed start, and each hour is billed in the month (in the customer's billing time zone)
it starts in: a boost across a month end is split without an extra hour.

Its bandwidth is not billed again as burst: a sample whose interval starts while the boost
was in force (raise to revert; to end_time without a revert; never past the disconnect)
has the boost's added rate taken off, per direction and never below zero, before the 95th
percentile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from services.billing.domain.percentile import Sample

HOUR = timedelta(hours=1)
# Octets one Mbps (10^6 bit/s) carries in one second.
OCTETS_PER_MBPS_SECOND = 125_000


@dataclass(frozen=True)
class BoostChange:
    """One raise or revert of a boost, as billing received it."""

    circuit_id: str
    boost_id: str
    revert: bool
    effective_time: datetime
    base_mbps: int
    boosted_mbps: int
    start_time: datetime
    end_time: datetime
    currency: str
    # The raise's boost price per Mbps per started hour (a revert's is not used).
    price_per_mbps_hour: Decimal
    event_id: str


@dataclass(frozen=True)
class Boost:
    """A raised boost of one circuit, with what ended it."""

    circuit_id: str
    boost_id: str
    base_mbps: int
    boosted_mbps: int
    start_time: datetime
    end_time: datetime
    currency: str
    price_per_mbps_hour: Decimal
    raised_at: datetime
    reverted_at: datetime | None = None
    disconnected_at: datetime | None = None

    @property
    def added_mbps(self) -> int:
        return self.boosted_mbps - self.base_mbps

    @property
    def billed_start(self) -> datetime:
        return max(self.start_time, self.raised_at)

    @property
    def billed_end(self) -> datetime:
        """End of the billed time; never before its start (then nothing is billed)."""
        ends = [self.end_time, self.reverted_at, self.disconnected_at]
        return max(self.billed_start, min(e for e in ends if e is not None))

    @property
    def in_force(self) -> tuple[datetime, datetime]:
        """[from, to) the routers ran the boosted rate (as far as billing knows)."""
        until = self.end_time if self.reverted_at is None else self.reverted_at
        if self.disconnected_at is not None:
            until = min(until, self.disconnected_at)
        return self.raised_at, max(self.raised_at, until)

    @property
    def started_hours(self) -> int:
        """Started hours of the whole billed time."""
        return _ceil_hours(self.billed_end - self.billed_start)

    def hours_starting(self, start: datetime, end: datetime) -> int:
        """How many of the billed started hours begin in [start, end)."""
        first = max(0, _ceil_hours(start - self.billed_start))
        stop = min(self.started_hours, max(0, _ceil_hours(end - self.billed_start)))
        return max(0, stop - first)

    def in_force_during(self, start: datetime, end: datetime) -> bool:
        began, ended = self.in_force
        return began < end and ended > start and began < ended

    def in_force_at(self, moment: datetime) -> bool:
        began, ended = self.in_force
        return began <= moment < ended


def _ceil_hours(span: timedelta) -> int:
    micros = (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds
    hour = 3_600_000_000
    return -(-micros // hour)


def build_boosts(
    changes: Iterable[BoostChange], disconnected_at: datetime | None = None
) -> list[Boost]:
    """The circuit's raised boosts (a revert alone is not billed until its raise comes),
    in the order they were raised."""
    by_id: dict[str, dict[bool, BoostChange]] = defaultdict(dict)
    for change in changes:
        by_id[change.boost_id].setdefault(change.revert, change)
    boosts = []
    for pair in by_id.values():
        raised = pair.get(False)
        if raised is None:
            continue
        revert = pair.get(True)
        boosts.append(Boost(
            circuit_id=raised.circuit_id, boost_id=raised.boost_id,
            base_mbps=raised.base_mbps, boosted_mbps=raised.boosted_mbps,
            start_time=raised.start_time, end_time=raised.end_time,
            currency=raised.currency, price_per_mbps_hour=raised.price_per_mbps_hour,
            raised_at=raised.effective_time,
            reverted_at=None if revert is None else revert.effective_time,
            disconnected_at=(
                disconnected_at
                if disconnected_at is not None and disconnected_at >= raised.effective_time
                else None
            ),
        ))
    return sorted(boosts, key=lambda b: (b.raised_at, b.boost_id))


def boost_octets(boosts: Sequence[Boost], interval_start: datetime, seconds: int) -> int:
    """Octets the boosts in force at ``interval_start`` add over an interval of
    ``seconds`` (the sample's start decides)."""
    added = sum(b.added_mbps for b in boosts if b.in_force_at(interval_start))
    return added * OCTETS_PER_MBPS_SECOND * seconds


def without_boosts(samples: Sequence[Sample], boosts: Sequence[Boost]) -> list[Sample]:
    """The samples with the added rate of the boosts in force at their start taken off,
    per direction, never below zero (only usage above the boosted rate is burst)."""
    if not boosts:
        return list(samples)
    lowered = []
    for sample in samples:
        octets = boost_octets(boosts, sample.interval_start, sample.interval_seconds)
        lowered.append(sample if not octets else replace(
            sample,
            bytes_in=max(0, sample.bytes_in - octets),
            bytes_out=max(0, sample.bytes_out - octets),
        ))
    return lowered
