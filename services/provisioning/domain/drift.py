"""The drift watch's decisions: what one read of a router means for one circuit end, and
which event, if any, that change of state publishes. Plain Python, no I/O.

A circuit end is ``(circuit, router)``. Its record keeps the state shown to ops (in sync,
drifted, unknown) apart from the drift last published (``reported``): a router that cannot
be read makes the end unknown without clearing or raising anything, so an unreachable
router is never reported as drift, and a drift seen before it stays published until a read
shows the end in sync again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from services.provisioning.domain.observe import Leaves, differences


class SyncStatus(enum.StrEnum):
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    UNKNOWN = "unknown"


class DriftKind(enum.StrEnum):
    NONE = ""
    MISSING = "missing"  # the router carries nothing for the circuit
    DIFFERENT = "different"  # it carries the circuit configured otherwise


@dataclass(frozen=True)
class Observation:
    """What one round found for a circuit end."""

    status: SyncStatus
    kind: DriftKind = DriftKind.NONE
    detail: str = ""


def observe(intended: Leaves, running: Leaves | None) -> Observation:
    """The end as read: ``running`` is the router's sub-interface, None when absent."""
    if running is None:
        return Observation(SyncStatus.DRIFTED, DriftKind.MISSING, "absent from the router")
    diff = differences(intended, running)
    if not diff:
        return Observation(SyncStatus.IN_SYNC)
    shown = "; ".join(f"{d.path}: {d.actual or '(none)'} instead of {d.intended or '(none)'}"
                      for d in diff)
    return Observation(SyncStatus.DRIFTED, DriftKind.DIFFERENT, shown)


def unreachable(reason: str) -> Observation:
    return Observation(SyncStatus.UNKNOWN, detail=f"router not read: {reason}")


@dataclass(frozen=True)
class EndRecord:
    """The stored sync status of one circuit end."""

    circuit_id: str
    router_name: str
    status: SyncStatus
    since: datetime
    checked_at: datetime
    last_seen_in_sync_at: datetime | None = None
    reported: DriftKind = DriftKind.NONE  # the drift last published (NONE: none or cleared)
    reported_since: datetime | None = None  # since when that drift holds
    detail: str = ""


class Publish(enum.Enum):
    DETECTED = "detected"
    CLEARED = "cleared"


@dataclass(frozen=True)
class Transition:
    record: EndRecord
    publish: Publish | None = None


def step(
    previous: EndRecord | None,
    circuit_id: str,
    router_name: str,
    seen: Observation,
    now: datetime,
) -> Transition:
    """The end's record after ``seen`` at ``now``, and the event the change publishes:
    DriftDetected when a drift is first seen (or its kind changes), DriftCleared when an
    end with a published drift is seen in sync; nothing for an unknown read."""
    if previous is None:
        previous = EndRecord(circuit_id, router_name, SyncStatus.UNKNOWN, now, now)
    since = previous.since if previous.status is seen.status else now
    record = replace(previous, status=seen.status, since=since, checked_at=now,
                     detail=seen.detail)
    if seen.status is SyncStatus.IN_SYNC:
        record = replace(record, last_seen_in_sync_at=now, reported=DriftKind.NONE,
                         reported_since=None)
        cleared = previous.reported is not DriftKind.NONE
        return Transition(record, Publish.CLEARED if cleared else None)
    if seen.status is SyncStatus.DRIFTED and seen.kind is not previous.reported:
        drifted_since = previous.reported_since or since
        return Transition(replace(record, reported=seen.kind, reported_since=drifted_since),
                          Publish.DETECTED)
    return Transition(record)


def gone(previous: EndRecord) -> Publish | None:
    """A record whose circuit is no longer active is dropped; a published drift is
    cleared with it, so nobody keeps showing it."""
    return Publish.CLEARED if previous.reported is not DriftKind.NONE else None


def out_of_sync_per_router(records: Iterable[EndRecord]) -> dict[str, int]:
    """How many circuit ends each router has drifted (unknown is not counted)."""
    counts: dict[str, int] = {}
    for record in records:
        counts.setdefault(record.router_name, 0)
        if record.status is SyncStatus.DRIFTED:
            counts[record.router_name] += 1
    return counts
