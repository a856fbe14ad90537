"""A circuit's contract over time: lifecycle changes -> dated segments of bandwidth and price.

A segment starts at an activation or a bandwidth change and ends at the next change or the
disconnect (exclusive); an open segment has no end yet. A modification that changes neither
bandwidth nor price (a redeploy) does not start a segment. Changes are ordered by their
effective time, whatever order they arrived in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class ChangeKind(enum.StrEnum):
    ACTIVATED = "activated"
    MODIFIED = "modified"
    DISCONNECTED = "disconnected"


# Two changes at the same instant: the activation first, the disconnect last.
_ORDER = {ChangeKind.ACTIVATED: 0, ChangeKind.MODIFIED: 1, ChangeKind.DISCONNECTED: 2}


@dataclass(frozen=True)
class PriceTerms:
    currency: str
    mrc: Decimal
    nrc: Decimal
    burst_price_per_mbps: Decimal
    term_months: int
    price_book_version: str = ""
    # Share of the MRC owed per remaining whole month on an early disconnect
    # (domain/termination.py).
    termination_share: Decimal = Decimal(0)


@dataclass(frozen=True)
class ContractChange:
    circuit_id: str
    tenant_id: str
    kind: ChangeKind
    effective_time: datetime
    bandwidth_mbps: int
    price: PriceTerms
    event_id: str
    # A sandbox circuit's change (README "Sandbox"): the circuit is never invoiced.
    sandbox: bool = False


@dataclass(frozen=True)
class Segment:
    circuit_id: str
    tenant_id: str
    start: datetime
    end: datetime | None
    bandwidth_mbps: int
    price: PriceTerms
    # True when the segment begins with an activation: its month carries the NRC.
    activation: bool

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and (self.end is None or self.end > start)


def build_segments(changes: Iterable[ContractChange]) -> list[Segment]:
    """Segments of one circuit, oldest first."""
    ordered = sorted(changes, key=lambda c: (c.effective_time, _ORDER[c.kind], c.event_id))
    segments: list[Segment] = []
    current: ContractChange | None = None
    for change in ordered:
        if _changes_nothing(change, current):
            continue
        if current is not None:
            segments.append(_segment(current, change.effective_time))
            current = None
        if change.kind is not ChangeKind.DISCONNECTED:
            current = change
    if current is not None:
        segments.append(_segment(current, None))
    return segments


def _changes_nothing(change: ContractChange, current: ContractChange | None) -> bool:
    # An ops Redeploy republishes the circuit as modified with the same terms: that is a
    # repair on the routers, not a new segment (which would split the month's p95).
    return (
        change.kind is ChangeKind.MODIFIED
        and current is not None
        and change.bandwidth_mbps == current.bandwidth_mbps
        and change.price == current.price
    )


def _segment(opening: ContractChange, end: datetime | None) -> Segment:
    return Segment(
        circuit_id=opening.circuit_id,
        tenant_id=opening.tenant_id,
        start=opening.effective_time,
        end=end,
        bandwidth_mbps=opening.bandwidth_mbps,
        price=opening.price,
        activation=opening.kind is ChangeKind.ACTIVATED,
    )
