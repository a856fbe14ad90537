"""Counter arithmetic of the meter: two counter readings -> usage samples. No I/O.

What happens when the meter polls a circuit's counters, in one place:

* every reading belongs to the interval *slot* its read time falls in (polls are scheduled
  at slot boundaries, so a reading taken at 10:05:00.3 closes the 10:00 interval and opens
  the 10:05 one);
* the first reading of a circuit only sets the baseline: no sample;
* a reading in the same slot as the baseline is ignored (the baseline stays, so no byte is
  lost or counted twice);
* otherwise the two readings bracket ``n`` intervals. With ``n == 1`` (start..end exactly
  one slot) the octets between them are that interval's sample. With ``n > 1`` polls were
  missed: those intervals are a gap and get NO sample (never a zero, never an estimate:
  spreading the delta would flatten the peaks the 95th percentile bills); the octets
  across the gap are kept as ONE gap volume over the whole gap (``intervals == n``), for
  volume totals and reconciliation, never a 5-minute sample;
* a counter that went down is a 64-bit wrap only if the wrapped difference is plausible
  for the time elapsed at the port's highest rate; otherwise, or when the agent reports a
  new discontinuity time, the counters were reset (router reboot, cleared counters): the
  bracketed interval (or gap) is published as invalid with zero bytes, never a huge or
  negative number, and the new reading becomes the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

COUNTER_MODULUS = 2**64
COUNTER_RESET = "counter-reset"

#: Highest plausible octet rate of a metered port: 400 Gbit/s, above any customer port.
DEFAULT_MAX_BYTES_PER_SECOND = 400 * 10**9 // 8


@dataclass(frozen=True)
class Reading:
    """One read of an interface's 64-bit octet counters."""

    in_octets: int
    out_octets: int
    read_at: datetime
    # When the agent says the counters last lost continuity (ietf-interfaces
    # statistics/discontinuity-time); None if the agent does not report it.
    discontinuity_time: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("in_octets", "out_octets"):
            value = getattr(self, name)
            if not 0 <= value < COUNTER_MODULUS:
                raise ValueError(f"{name}={value} is not a 64-bit counter value")
        if self.read_at.tzinfo is None:
            raise ValueError("read_at must be timezone-aware")


@dataclass(frozen=True)
class IntervalUsage:
    """Octets of one interval (``intervals == 1``: a sample) or of a gap of ``intervals``
    missed intervals (a gap volume); ``valid`` False: counters reset, zero bytes."""

    interval_start: datetime
    bytes_in: int
    bytes_out: int
    valid: bool
    invalid_reason: str = ""
    intervals: int = 1

    @property
    def gap_volume(self) -> bool:
        return self.intervals > 1


@dataclass(frozen=True)
class Advance:
    """The outcome of one reading: samples to publish and the reading to keep as baseline."""

    samples: tuple[IntervalUsage, ...]
    baseline: Reading


def slot_start(moment: datetime, interval_seconds: int) -> datetime:
    """Start of the interval slot ``moment`` falls in (slots aligned to the Unix epoch)."""
    if interval_seconds <= 0:
        raise ValueError("interval_seconds must be greater than zero")
    epoch_seconds = int(moment.timestamp() // interval_seconds) * interval_seconds
    return datetime.fromtimestamp(epoch_seconds, UTC)


def counter_delta(
    previous: int, current: int, elapsed_seconds: float, max_bytes_per_second: int
) -> int | None:
    """Octets counted between two readings, or None if the counter was reset.

    A counter that went down wrapped at 2^64 only if the wrapped difference fits in the
    elapsed time at ``max_bytes_per_second``; a 64-bit octet counter needs years to wrap
    at line rate, so a decrease is almost always a reset.
    """
    if current >= previous:
        return current - previous
    wrapped = current + COUNTER_MODULUS - previous
    if wrapped <= max(elapsed_seconds, 0.0) * max_bytes_per_second:
        return wrapped
    return None


def advance(
    baseline: Reading | None,
    current: Reading,
    interval_seconds: int,
    *,
    max_bytes_per_second: int = DEFAULT_MAX_BYTES_PER_SECOND,
) -> Advance:
    """Turn the newest reading into samples against the baseline (rules in the module doc)."""
    if baseline is None:
        return Advance((), current)
    start = slot_start(baseline.read_at, interval_seconds)
    end = slot_start(current.read_at, interval_seconds)
    if end <= start:
        return Advance((), baseline)
    count = int((end - start) / timedelta(seconds=interval_seconds))

    elapsed = (current.read_at - baseline.read_at).total_seconds()
    delta_in = counter_delta(baseline.in_octets, current.in_octets, elapsed, max_bytes_per_second)
    delta_out = counter_delta(
        baseline.out_octets, current.out_octets, elapsed, max_bytes_per_second
    )
    discontinuity = (
        baseline.discontinuity_time is not None
        and current.discontinuity_time is not None
        and current.discontinuity_time != baseline.discontinuity_time
    )
    if delta_in is None or delta_out is None or discontinuity:
        return Advance((IntervalUsage(start, 0, 0, False, COUNTER_RESET, count),), current)
    return Advance((IntervalUsage(start, delta_in, delta_out, True, "", count),), current)


def subinterface_name(interface_name: str, vlan_id: int) -> str:
    """The name a circuit's counters go by: its sub-interface ``<interface>.<vlan>``.

    A circuit is one VLAN on a shared customer port, so the port's own counters would mix
    every circuit on it; the sub-interface (index = VLAN, as the routers are configured)
    counts only this circuit. Agents list sub-interfaces in ietf-interfaces under this
    name; a router that names them otherwise gets an explicit mapping in the meter's
    router configuration.
    """
    if not interface_name:
        raise ValueError("interface_name must not be empty")
    if not 1 <= vlan_id <= 4094:
        raise ValueError(f"vlan_id={vlan_id} is outside 1..4094")
    return f"{interface_name}.{vlan_id}"
