"""Scheduled and time-boxed bandwidth: the window a change asks for, and the calendar of
reservations admission reads it against.

A change may take effect at a start time, and a boost (a change with an end time) reverts
by itself at its end. Each open order holds its reservation over a window [start, end):
an order without a start holds it from now, one without an end for good. Admission checks
the channel and the ports at the peak, over the new order's window, of the reservations
overlapping it (plus the committed bandwidth, which holds throughout); an immediate order's
window is [now, for good). Releases are never
counted ahead: a boost in force stays committed at its boosted rate until its revert has
completed, and one still with provisioning past its end holds its reservation on (the
store reads it so), so neither a late boost nor a late revert can oversell the channel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from services.common.errors import FieldViolation, InvalidArgument
from services.order.domain.capacity import Headroom

# A boost lasts at least an hour (billing counts started hours) and at most a month; a
# change is booked at most this far ahead.
MIN_BOOST = timedelta(hours=1)
MAX_BOOST = timedelta(days=31)
MAX_AHEAD = timedelta(days=90)
# The farthest a timeline reaches: the latest end a boost can have.
MAX_TIMELINE = MAX_AHEAD + MAX_BOOST


@dataclass(frozen=True)
class Window:
    """[start, end): None for an open end (from now; for good)."""

    start: datetime | None
    end: datetime | None

    def overlaps(self, other: Window) -> bool:
        return ((self.end is None or other.start is None or other.start < self.end)
                and (other.end is None or self.start is None or self.start < other.end))



# An order without a start or an end: in effect once approved, for good.
NO_WINDOW = Window(None, None)


@dataclass(frozen=True)
class Reservation:
    """Bandwidth one open order holds over its window."""

    mbps: int
    window: Window


def peak_reserved(reservations: Iterable[Reservation], start: datetime,
                  end: datetime | None) -> int:
    """The most bandwidth the ``reservations`` hold at any moment of [start, end).

    Held bandwidth only rises where a reservation starts, so the peak is reached at
    ``start`` or at the start of a reservation inside the window.
    """
    window = Window(start, end)
    overlapping = [r for r in reservations if r.window.overlaps(window)]
    moments = {start} | {r.window.start for r in overlapping
                         if r.window.start is not None and r.window.start > start}
    return max(sum(r.mbps for r in overlapping if _holds_at(r.window, moment))
               for moment in moments)


class Calendar:
    """The reservations of one pool (with their A and Z ports) as admission reads them from
    ``start`` on. Those holding from ``start`` for good (every pending immediate order) are
    kept as sums, by port and for the pool, so that a batch of new circuits is checked
    without reading all of them again for each; the others are listed."""

    def __init__(self, start: datetime, held: Iterable[tuple[str, str, Reservation]]) -> None:
        self.start = start
        self._lasting: dict[str | None, int] = defaultdict(int)  # None: the pool
        self._timed: list[tuple[str, str, Reservation]] = []
        for a_port, z_port, reservation in held:
            self.add(a_port, z_port, reservation)

    def add(self, a_port: str, z_port: str, reservation: Reservation) -> None:
        window = reservation.window
        if window.end is None and (window.start is None or window.start <= self.start):
            for key in (None, a_port, z_port):
                self._lasting[key] += reservation.mbps
        else:
            self._timed.append((a_port, z_port, reservation))

    def at_peak(self, resource: Headroom, port_id: str | None, end: datetime | None
                ) -> Headroom:
        """``resource`` (the pool when ``port_id`` is None; its committed bandwidth holds
        throughout) with the peak of what is held on it over [start, end) as reserved."""
        timed = [r for a, z, r in self._timed if port_id is None or port_id in (a, z)]
        return Headroom(resource.name, resource.capacity_mbps, resource.committed_mbps,
                        self._lasting[port_id] + peak_reserved(timed, self.start, end))


def _holds_at(window: Window, moment: datetime) -> bool:
    return ((window.start is None or window.start <= moment)
            and (window.end is None or moment < window.end))


@dataclass(frozen=True)
class Interval:
    """Free bandwidth over [start, end): of the channel and of each port asked for."""

    start: datetime
    end: datetime
    channel_free_mbps: int
    port_free_mbps: Mapping[str, int]


def timeline(channel: Headroom, ports: Mapping[str, Headroom],
             held: Sequence[tuple[str, str, Reservation]], start: datetime, end: datetime
             ) -> list[Interval]:
    """The free bandwidth of the channel and ``ports`` (their committed bandwidth holds
    throughout; ``held`` gives each reservation with its A and Z ports) over [start, end),
    cut where a reservation starts or ends and merged where nothing changes."""
    cuts = sorted({start, end} | {moment for _, _, r in held
                                  for moment in (r.window.start, r.window.end)
                                  if moment is not None and start < moment < end})
    found: list[Interval] = []
    for left, right in pairwise(cuts):
        holding = [(a, z, r.mbps) for a, z, r in held if _holds_at(r.window, left)]
        channel_free = _free(channel, sum(mbps for _, _, mbps in holding))
        port_free = {port_id: _free(port, sum(mbps for a, z, mbps in holding
                                              if port_id in (a, z)))
                     for port_id, port in ports.items()}
        last = found[-1] if found else None
        if last and (last.channel_free_mbps, last.port_free_mbps) == (channel_free, port_free):
            found[-1] = Interval(last.start, right, channel_free, port_free)
        else:
            found.append(Interval(left, right, channel_free, port_free))
    return found


def _free(resource: Headroom, reserved: int) -> int:
    return max(0, resource.capacity_mbps - resource.committed_mbps - reserved)


def check_timeline(start: datetime | None, end: datetime, moment: datetime) -> datetime:
    """The start of a timeline asked for [start, end) (now when absent), or InvalidArgument."""
    start = moment if start is None else start
    if start < moment:
        raise InvalidArgument.for_field("start_time", f"{start.isoformat()} is in the past")
    if end <= start:
        raise InvalidArgument.for_field("end_time", "must be after start_time (or now)")
    if end > moment + MAX_TIMELINE:
        raise InvalidArgument.for_field(
            "end_time", f"at most {MAX_TIMELINE.days} days ahead, the latest a boost can end")
    return start


def check_window(start: datetime | None, end: datetime | None, moment: datetime,
                 current_mbps: int, bandwidth_mbps: int) -> Window:
    """The window a bandwidth change asks for, or InvalidArgument naming each field wrong."""
    problems: list[FieldViolation] = []
    if end is not None and start is None:
        problems.append(FieldViolation("start_time", "a boost (end_time set) needs a "
                                       "start_time"))
    if start is not None:
        if start < moment:
            problems.append(FieldViolation(
                "start_time", f"{start.isoformat()} is in the past (now {moment.isoformat()})"))
        elif start > moment + MAX_AHEAD:
            problems.append(FieldViolation(
                "start_time", f"at most {MAX_AHEAD.days} days ahead"))
    if end is not None and start is not None:
        if end < start + MIN_BOOST:
            problems.append(FieldViolation(
                "end_time", "a boost lasts at least 1 hour: end_time must be at least 1 hour "
                "after start_time"))
        elif end > start + MAX_BOOST:
            problems.append(FieldViolation(
                "end_time", f"a boost lasts at most {MAX_BOOST.days} days"))
        if bandwidth_mbps <= current_mbps:
            problems.append(FieldViolation(
                "bandwidth_mbps", f"a boost raises the bandwidth: give more than the current "
                f"{current_mbps} Mbps (or leave end_time out for a lasting change)"))
    if problems:
        raise InvalidArgument("the change's window is not valid", problems)
    return Window(start, end)
