"""The drift watch's state transitions: an event only on a change of state, and an
unreadable router never taken for drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.provisioning.domain.circuits import CircuitEnd
from services.provisioning.domain.drift import (
    DriftKind,
    EndRecord,
    Observation,
    Publish,
    SyncStatus,
    gone,
    observe,
    out_of_sync_per_router,
    step,
    unreachable,
)
from services.provisioning.domain.observe import intended_leaves

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
END = CircuitEnd("CKT-1", "sg-edge-1", "xe-0/0/1", 120, "t", 100, 0)
INTENDED = intended_leaves("openconfig", END)
IN_SYNC = observe(INTENDED, dict(INTENDED))
MISSING = observe(INTENDED, None)
ALTERED = observe(INTENDED, {**INTENDED, next(p for p in INTENDED if p.endswith("/cir")): "9"})
DOWN = unreachable("timed out")


def run(*seen: Observation) -> list[tuple[EndRecord, Publish | None]]:
    """Each round's record and event, one round a minute from T0."""
    record: EndRecord | None = None
    found = []
    for minute, observation in enumerate(seen):
        moved = step(record, "CKT-1", "sg-edge-1", observation, T0 + timedelta(minutes=minute))
        record = moved.record
        found.append((record, moved.publish))
    return found


def test_what_a_read_shows_of_an_end() -> None:
    assert Observation(SyncStatus.IN_SYNC) == IN_SYNC
    assert (MISSING.status, MISSING.kind) == (SyncStatus.DRIFTED, DriftKind.MISSING)
    assert (ALTERED.status, ALTERED.kind) == (SyncStatus.DRIFTED, DriftKind.DIFFERENT)
    assert "9 instead of 100000000" in ALTERED.detail
    assert (DOWN.status, DOWN.kind) == (SyncStatus.UNKNOWN, DriftKind.NONE)


def test_in_sync_to_drifted_publishes_detected_once() -> None:
    rounds = run(IN_SYNC, MISSING, MISSING, MISSING)
    assert [p for _, p in rounds] == [None, Publish.DETECTED, None, None]
    record = rounds[-1][0]
    assert record.status is SyncStatus.DRIFTED and record.reported is DriftKind.MISSING
    assert record.since == T0 + timedelta(minutes=1), "since the first round that saw it"
    assert record.last_seen_in_sync_at == T0


def test_drifted_back_in_sync_publishes_cleared_once() -> None:
    rounds = run(IN_SYNC, ALTERED, IN_SYNC, IN_SYNC)
    assert [p for _, p in rounds] == [None, Publish.DETECTED, Publish.CLEARED, None]
    record = rounds[-1][0]
    assert record.status is SyncStatus.IN_SYNC and record.reported is DriftKind.NONE
    assert record.since == T0 + timedelta(minutes=2)
    assert record.last_seen_in_sync_at == T0 + timedelta(minutes=3)


def test_an_unreachable_router_is_unknown_and_never_drift() -> None:
    rounds = run(IN_SYNC, DOWN, DOWN, IN_SYNC)
    assert [p for _, p in rounds] == [None, None, None, None]
    assert [r.status for r, _ in rounds] == [
        SyncStatus.IN_SYNC, SyncStatus.UNKNOWN, SyncStatus.UNKNOWN, SyncStatus.IN_SYNC
    ]
    assert rounds[2][0].reported is DriftKind.NONE
    assert rounds[2][0].last_seen_in_sync_at == T0, "an unknown round does not count as seen"
    assert run(DOWN)[0][1] is None, "a first round that cannot read raises nothing"


def test_a_drift_outlives_an_unreadable_router_and_is_cleared_once_seen_in_sync() -> None:
    rounds = run(MISSING, DOWN, MISSING, DOWN, IN_SYNC)
    assert [p for _, p in rounds] == [Publish.DETECTED, None, None, None, Publish.CLEARED]
    assert rounds[3][0].status is SyncStatus.UNKNOWN
    assert rounds[3][0].reported is DriftKind.MISSING, "still published while unknown"
    assert rounds[2][0].reported_since == T0, "the drift holds since it was first seen"


def test_another_kind_of_drift_is_published_again() -> None:
    rounds = run(MISSING, ALTERED, ALTERED)
    assert [p for _, p in rounds] == [Publish.DETECTED, Publish.DETECTED, None]
    assert rounds[1][0].reported is DriftKind.DIFFERENT
    assert rounds[1][0].reported_since == T0


def test_a_dropped_end_clears_only_a_published_drift() -> None:
    assert gone(run(MISSING)[0][0]) is Publish.CLEARED
    assert gone(run(IN_SYNC)[0][0]) is None
    assert gone(run(IN_SYNC, DOWN)[-1][0]) is None


def test_out_of_sync_counts_per_router() -> None:
    drifted = run(MISSING)[0][0]
    fine = step(None, "CKT-2", "cq-edge-1", IN_SYNC, T0).record
    unknown = step(None, "CKT-3", "sg-edge-1", DOWN, T0).record
    assert out_of_sync_per_router([drifted, fine, unknown]) == {"sg-edge-1": 1, "cq-edge-1": 0}
