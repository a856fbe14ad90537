"""What a month's 95th percentile needs, kept as samples arrive (no I/O).

Nearest rank discards the top floor(5N/100) samples of each direction and bills the next
one down, so per circuit and billing month it is enough to keep N (the valid samples) and,
per direction, the K highest samples, K = floor(5 * Nmax / 100) + 1 where Nmax is the
number of 5-minute intervals in the month: the answer is the entry at index floor(5N/100)
of the descending top list. Samples are ranked exactly as ``percentile.nearest_rank_p95``
ranks them: by rate (bytes * 8 / seconds), then interval start.

The state stands for *all* the valid samples of its month and nothing else. Where a
question is not "the whole month's samples" (a segment covering part of them, a run as of
a cut-off earlier than some of them, more samples than K covers) the state says so and
the caller scans the stored samples instead.
"""

from __future__ import annotations

import functools
import itertools
import operator
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from services.billing.domain.percentile import (
    DirectionPercentile,
    PercentileResult,
    Sample,
    discarded_count,
    expected_intervals,
    rate_bps,
)
from services.billing.domain.rating import BillingMonth

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENTRY = struct.Struct("<qiqq")
# One kept sample as plain ints (cheap to sort, pack and unpack by the thousand):
# interval start in microseconds since the epoch, seconds, bytes in, bytes out.
Entry = tuple[int, int, int, int]
_IN_ORDER = operator.itemgetter(2, 0)
_OUT_ORDER = operator.itemgetter(3, 0)


class NeedsScan(Exception):
    """The kept state cannot answer this question exactly: scan the stored samples."""


def billing_month(interval_start: datetime, zone: ZoneInfo) -> BillingMonth:
    """The billing month (in ``zone``) a sample belongs to."""
    local = interval_start.astimezone(zone)
    return BillingMonth(local.year, local.month)


def capacity_for(month: BillingMonth, zone: ZoneInfo) -> int:
    """K: how many samples per direction the month's state keeps."""
    start, end = month.window(zone)
    return discarded_count(expected_intervals(start, end)) + 1


def entry_of(sample: Sample) -> Entry:
    return (
        micros(sample.interval_start), sample.interval_seconds, sample.bytes_in, sample.bytes_out
    )


def sample_of(entry: Entry) -> Sample:
    start, seconds, bytes_in, bytes_out = entry
    return Sample(_EPOCH + timedelta(microseconds=start), bytes_in, bytes_out, seconds)


def micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class PeakState:
    """One circuit's billing month: N and the top-K samples of each direction."""

    capacity: int
    samples: int = 0
    first_start: datetime | None = None
    last_start: datetime | None = None
    last_received: datetime | None = None
    # Highest first, by (rate, interval start) of the direction.
    top_in: tuple[Entry, ...] = ()
    top_out: tuple[Entry, ...] = ()

    @property
    def complete(self) -> bool:
        """Does the state still hold the sample nearest rank bills?"""
        return discarded_count(self.samples) < self.capacity

    def billed(self) -> tuple[Entry, Entry] | None:
        """The billed sample of each direction (in, out); None without samples."""
        if not self.samples:
            return None
        if not self.complete:
            raise NeedsScan(f"{self.samples} samples exceed the {self.capacity} kept")
        index = discarded_count(self.samples)
        return self.top_in[index], self.top_out[index]

    def percentile(self) -> PercentileResult | None:
        """The month's p95 exactly as ``nearest_rank_p95`` over all its valid samples."""
        billed = self.billed()
        if billed is None:
            return None
        return _result(self.samples, sample_of(billed[0]), sample_of(billed[1]))


def _result(samples: int, inbound: Sample, outbound: Sample) -> PercentileResult:
    return PercentileResult(
        samples_present=samples,
        samples_discarded=discarded_count(samples),
        inbound=DirectionPercentile(inbound, rate_bps(inbound.bytes_in, inbound.interval_seconds)),
        outbound=DirectionPercentile(
            outbound, rate_bps(outbound.bytes_out, outbound.interval_seconds)
        ),
    )


def merge(state: PeakState, entries: Sequence[Entry], received_at: datetime) -> PeakState:
    """The state with these newly stored valid samples added, received by ``received_at``
    (invalid samples are never billed: leave them out)."""
    if not entries:
        return state
    first = _EPOCH + timedelta(microseconds=min(e[0] for e in entries))
    last = _EPOCH + timedelta(microseconds=max(e[0] for e in entries))
    return PeakState(
        capacity=state.capacity,
        samples=state.samples + len(entries),
        first_start=first if state.first_start is None else min(state.first_start, first),
        last_start=last if state.last_start is None else max(state.last_start, last),
        last_received=(
            received_at if state.last_received is None
            else max(state.last_received, received_at)
        ),
        top_in=_top(state.top_in, entries, state.capacity, inbound=True),
        top_out=_top(state.top_out, entries, state.capacity, inbound=False),
    )


def _top(
    kept: tuple[Entry, ...], new: Sequence[Entry], count: int, *, inbound: bool
) -> tuple[Entry, ...]:
    """The ``count`` highest of ``kept`` (highest first) and ``new``; ``kept`` itself (the
    same object) when none of ``new`` enters it."""
    octets = 2 if inbound else 3
    if len({e[1] for e in kept} | {e[1] for e in new}) <= 1:
        # One interval length: bytes order the rates exactly, and ints compare fast.
        key: Callable[[Entry], tuple[object, int]] = _IN_ORDER if inbound else _OUT_ORDER
    else:
        def key(e: Entry) -> tuple[object, int]:
            return Fraction(e[octets], e[1]), e[0]
    if len(kept) >= count and all(key(e) < key(kept[-1]) for e in new):
        return kept
    # Timsort on a sorted run plus a few new ones costs about one pass.
    return tuple(sorted([*kept, *new], key=key, reverse=True)[:count])


@dataclass(frozen=True)
class KeptMonth:
    """One circuit's month as a month-end run reads it: N and the billed samples only."""

    circuit_id: str
    time_zone: str
    month: BillingMonth
    samples: int
    first_start: datetime | None
    last_start: datetime | None
    last_received: datetime | None
    # The billed sample of each direction; None without samples or beyond the state.
    inbound: Sample | None
    outbound: Sample | None

    def percentile(self, start: datetime, end: datetime) -> PercentileResult | None:
        """The p95 of the valid samples starting in [start, end), or NeedsScan."""
        first, last = self.first_start, self.last_start
        if not self.samples or first is None or last is None or last < start or first >= end:
            return None
        if not (start <= first and last < end):
            raise NeedsScan("the month's samples straddle a segment boundary")
        if self.inbound is None or self.outbound is None:
            raise NeedsScan("the month has more samples than its state keeps")
        return _result(self.samples, self.inbound, self.outbound)


def kept_month(state: PeakState, circuit_id: str, zone: str, month: BillingMonth) -> KeptMonth:
    billed = state.billed() if state.complete else None
    return KeptMonth(
        circuit_id, zone, month, state.samples, state.first_start, state.last_start,
        state.last_received,
        None if billed is None else sample_of(billed[0]),
        None if billed is None else sample_of(billed[1]),
    )


def usable(
    kept: Iterable[KeptMonth], zone: str, month: BillingMonth, as_of: datetime
) -> KeptMonth | None:
    """The circuit's state for ``month`` in ``zone`` when it stands for exactly the valid
    samples a scan as of ``as_of`` would read; None: scan.

    ``kept`` is every state row of the circuit for the month and its two neighbours. A row
    in another zone there means some samples were filed under another customer zone (a
    configuration change): they may belong to this month's window, so the state may lack
    them. A sample received after the cut-off is in the state but not in the scan.
    """
    rows = [k for k in kept if abs(_ordinal(k.month) - _ordinal(month)) <= 1]
    if any(k.time_zone != zone for k in rows):
        return None
    found = next((k for k in rows if k.month == month), None)
    if found is None or found.last_received is None or found.last_received > as_of:
        return None
    return found


def _ordinal(month: BillingMonth) -> int:
    return month.year * 12 + month.month


def pack(entries: Sequence[Entry]) -> bytes:
    return _layout(len(entries)).pack(*itertools.chain.from_iterable(entries))


@functools.cache
def _layout(count: int) -> struct.Struct:
    # One C call packs a whole list (a month's list is at most a few hundred entries).
    return struct.Struct("<" + "qiqq" * count)


def unpack(blob: bytes) -> tuple[Entry, ...]:
    return tuple(_ENTRY.iter_unpack(blob))
