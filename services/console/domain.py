"""What the console computes from the services' answers: plain Python, no I/O.

* the channel's committed bandwidth over time, rebuilt from completed orders, and the
  geometry of its chart (drawn as SVG by the capacity template);
* the difference between what a router runs and the payload an approver is shown;
* searching circuits, and each circuit's sync status per router.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# -- capacity over time ----------------------------------------------------------------


class OrderKind(enum.Enum):
    NEW = "new"
    CHANGE = "change"
    DISCONNECT = "disconnect"


@dataclass(frozen=True)
class CompletedOrder:
    kind: OrderKind
    complete_time: datetime
    bandwidth_mbps: int
    previous_bandwidth_mbps: int = 0

    @property
    def delta_mbps(self) -> int:
        """How the channel's committed bandwidth moved when the order completed."""
        if self.kind is OrderKind.NEW:
            return self.bandwidth_mbps
        if self.kind is OrderKind.CHANGE:
            return self.bandwidth_mbps - self.previous_bandwidth_mbps
        return -self.bandwidth_mbps


@dataclass(frozen=True)
class Point:
    time: datetime
    committed_mbps: int


def committed_history(
    orders: Iterable[CompletedOrder], now: datetime, committed_now: int
) -> list[Point]:
    """Committed bandwidth after each completed order, oldest first, ending at ``now``.

    The series is anchored on today's figure (``committed_now``, from GetCapacity): the
    orders give the steps, so orders older than the ones read only shift the start.
    """
    ordered = sorted(orders, key=lambda o: o.complete_time)
    level = committed_now - sum(o.delta_mbps for o in ordered)
    points = [Point(ordered[0].complete_time if ordered else now - timedelta(hours=1), level)]
    for order in ordered:
        level += order.delta_mbps
        points.append(Point(order.complete_time, level))
    points.append(Point(now, committed_now))
    return points


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    """A step chart of committed bandwidth under the capacity line, in SVG user units."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    line_path: str
    area_path: str
    capacity_y: float
    y_ticks: list[Tick]
    x_ticks: list[Tick]


def _gbps(mbps: float) -> str:
    return f"{mbps / 1000:g} Gbps"


def capacity_chart(
    points: Sequence[Point], capacity_mbps: int, width: int = 720, height: int = 260
) -> Chart:
    """Geometry of the chart: time left to right, 0 to the capacity bottom to top."""
    left, top, right, bottom = 70, 16, width - 16, height - 32
    start, end = points[0].time, points[-1].time
    span = max((end - start).total_seconds(), 1.0)
    ceiling = max(capacity_mbps, *(p.committed_mbps for p in points), 1)

    def x(at: datetime) -> float:
        return round(left + (right - left) * (at - start).total_seconds() / span, 1)

    def y(mbps: float) -> float:
        return round(bottom - (bottom - top) * mbps / ceiling, 1)

    steps = [f"M{x(points[0].time)},{y(points[0].committed_mbps)}"]
    for point in points[1:]:
        steps.append(f"H{x(point.time)}V{y(point.committed_mbps)}")
    line = "".join(steps)
    area = f"{line}V{bottom}H{x(points[0].time)}Z"
    y_ticks = [Tick(y(ceiling * i / 4), _gbps(ceiling * i / 4)) for i in range(5)]
    fmt = "%H:%M" if span <= 2 * 86400 else "%d %b"
    x_ticks = [
        Tick(x(start + timedelta(seconds=span * i / 4)),
             (start + timedelta(seconds=span * i / 4)).strftime(fmt))
        for i in range(5)
    ]
    return Chart(width, height, left, top, right, bottom, line, area, y(capacity_mbps),
                 y_ticks, x_ticks)


@dataclass(frozen=True)
class PortUse:
    port_id: str
    speed_mbps: int
    committed_mbps: int
    reserved_mbps: int

    @property
    def committed_pct(self) -> float:
        return round(100 * self.committed_mbps / self.speed_mbps, 1) if self.speed_mbps else 0.0

    @property
    def reserved_pct(self) -> float:
        return round(100 * self.reserved_mbps / self.speed_mbps, 1) if self.speed_mbps else 0.0


# -- payload difference ------------------------------------------------------------------


class DiffKind(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    SAME = "same"
    HUNK = "hunk"


@dataclass(frozen=True)
class DiffLine:
    kind: DiffKind
    text: str


def text_diff(before: str, after: str) -> list[DiffLine]:
    """Unified difference of two texts, line by line (headers left out)."""
    lines: list[DiffLine] = []
    for raw in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=3):
        if raw.startswith(("---", "+++")):
            continue
        if raw.startswith("@@"):
            lines.append(DiffLine(DiffKind.HUNK, raw))
        elif raw.startswith("+"):
            lines.append(DiffLine(DiffKind.ADDED, raw[1:]))
        elif raw.startswith("-"):
            lines.append(DiffLine(DiffKind.REMOVED, raw[1:]))
        else:
            lines.append(DiffLine(DiffKind.SAME, raw[1:]))
    return lines


# -- circuits and their sync status ------------------------------------------------------


@dataclass(frozen=True)
class CircuitSummary:
    id: str
    tenant_id: str
    state: str
    a_end: str
    z_end: str
    a_router: str
    z_router: str
    bandwidth_mbps: int
    customer_reference: str
    description: str

    @property
    def routers(self) -> tuple[str, str]:
        return self.a_router, self.z_router


def search(circuits: Iterable[CircuitSummary], query: str, state: str = "") -> list[CircuitSummary]:
    """Circuits whose id, tenant, ends, reference or description contain every word of
    ``query`` (case-insensitive), in ``state`` if given."""
    words = query.lower().split()
    found = []
    for circuit in circuits:
        if state and circuit.state != state:
            continue
        haystack = " ".join((circuit.id, circuit.tenant_id, circuit.state, circuit.a_end,
                             circuit.z_end, circuit.customer_reference, circuit.description,
                             f"{circuit.bandwidth_mbps} mbps")).lower()
        if all(word in haystack for word in words):
            found.append(circuit)
    return found


@dataclass(frozen=True)
class DeviceSync:
    """One router's CheckSync answer."""

    device_name: str
    in_sync: bool
    missing: frozenset[str] = frozenset()
    drifted: frozenset[str] = frozenset()
    extra: frozenset[str] = frozenset()
    error: str = ""
    differences: Mapping[str, list[tuple[str, str, str]]] = field(default_factory=dict)


class SyncLabel(enum.Enum):
    IN_SYNC = "in sync"
    DRIFT = "drift"
    MISSING = "missing"
    UNREACHABLE = "unreachable"
    NOT_CHECKED = "not checked"
    NOT_DEPLOYED = "-"


# Circuit states in which the routers are meant to carry the circuit.
DEPLOYED_STATES = frozenset({"ACTIVE", "MODIFYING", "DISCONNECTING"})


def sync_label(circuit: CircuitSummary, router: str,
               checks: Mapping[str, DeviceSync]) -> SyncLabel:
    """The circuit's sync status on one of its routers, from the last CheckSync."""
    if circuit.state not in DEPLOYED_STATES:
        return SyncLabel.NOT_DEPLOYED
    check = checks.get(router)
    if check is None:
        return SyncLabel.NOT_CHECKED
    if check.error:
        return SyncLabel.UNREACHABLE
    if circuit.id in check.missing:
        return SyncLabel.MISSING
    if circuit.id in check.drifted:
        return SyncLabel.DRIFT
    return SyncLabel.IN_SYNC
