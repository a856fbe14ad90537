"""The router batch model: member states through confirm, cancel, rollback plans, unknown
outcomes recorded from running, and its stored form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.provisioning.domain.batch import (
    Batch,
    BatchState,
    Member,
    MemberState,
    RollbackPlan,
    Settle,
    WaitingReply,
)

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
LEAVES = {"/x/description": "c1 test", "/x/vlan-id": "100"}
OLD_LEAVES = {"/x/description": "c1 test", "/x/vlan-id": "100", "/x/cir": "1"}


def member(
    vlan: int, state: MemberState = MemberState.UNDECIDED, *, after: dict[str, str] | None = None,
    before: dict[str, str] | None = None,
) -> Member:
    return Member(
        saga_id=f"saga-{vlan}",
        state=state,
        inverse=f"<inverse {vlan}/>",
        interface="xe-0/0/1",
        vlan=vlan,
        after=LEAVES if after is None and before is None else after,
        before=before,
        sha256=f"sha-{vlan}",
    )


def batch(*members: Member) -> Batch:
    return Batch(
        persist_id="idc-1",
        router_name="sg-edge-1",
        expire_at=NOW + timedelta(seconds=120),
        members={f"c{m.vlan}": m for m in members},
    )


def test_confirming_commits_the_undecided_and_reverts_the_inverses_in_the_candidate() -> None:
    b = batch(member(1), member(2, MemberState.ROLLED_BACK_IN_CANDIDATE))
    b.confirmed()
    assert b.state is BatchState.CLOSED
    assert b.members["c1"].state is MemberState.COMMITTED
    assert b.members["c2"].state is MemberState.REVERTED


def test_cancelling_reverts_every_member_in_question_and_keeps_the_decided() -> None:
    b = batch(
        member(1), member(2, MemberState.ROLLED_BACK_IN_CANDIDATE), member(3, MemberState.CONFIRMED)
    )
    b.reverted()
    assert [m.state for m in b.members.values()] == [
        MemberState.REVERTED,
        MemberState.REVERTED,
        MemberState.CONFIRMED,
    ]


@pytest.mark.parametrize(
    ("states", "circuit", "plan"),
    [
        ([MemberState.UNDECIDED], "c1", RollbackPlan.CANCEL_BATCH),
        ([MemberState.UNDECIDED, MemberState.UNDECIDED], "c1", RollbackPlan.EDIT_INVERSE),
        (
            [MemberState.ROLLED_BACK_IN_CANDIDATE, MemberState.UNDECIDED],
            "c1",
            RollbackPlan.ALREADY_WAITING,
        ),
        (
            [MemberState.ROLLED_BACK_IN_CANDIDATE, MemberState.UNDECIDED],
            "c2",
            RollbackPlan.CANCEL_BATCH,
        ),
        ([MemberState.COMMITTED], "c1", RollbackPlan.APPLY_INVERSE),
        ([MemberState.CONFIRMED], "c1", RollbackPlan.APPLY_INVERSE),
        ([MemberState.REVERTED], "c1", RollbackPlan.VERIFY),
    ],
)
def test_the_rollback_plan_follows_the_members_state(
    states: list[MemberState], circuit: str, plan: RollbackPlan
) -> None:
    b = batch(*(member(i + 1, s) for i, s in enumerate(states)))
    if states[0] in (MemberState.COMMITTED, MemberState.CONFIRMED, MemberState.REVERTED):
        b.state = BatchState.CLOSED
    assert b.rollback_plan(circuit) is plan


def test_an_unknown_outcome_is_settled_the_way_the_saga_decided() -> None:
    b = batch(member(1))
    assert b.settle is None
    b.outcome_unknown(Settle.CONFIRM)
    assert b.state is BatchState.SETTLE_CONFIRM and b.settle is Settle.CONFIRM
    assert not b.is_open
    b.outcome_unknown(Settle.CANCEL)
    assert b.settle is Settle.CANCEL


def test_running_decides_each_member_once_the_batch_ended() -> None:
    create_landed = member(1)  # after = LEAVES
    create_gone = member(2)
    delete_landed = member(3, after=None, before=LEAVES)
    modify_reverted = member(4, after=LEAVES, before=OLD_LEAVES)
    confirmed = member(5, MemberState.CONFIRMED)
    b = batch(create_landed, create_gone, delete_landed, modify_reverted, confirmed)
    b.outcome_unknown(Settle.CANCEL)
    running = {("xe-0/0/1", 1): LEAVES, ("xe-0/0/1", 4): OLD_LEAVES, ("xe-0/0/1", 5): LEAVES}
    b.recorded_from(running)
    assert b.state is BatchState.CLOSED
    assert {c: m.state for c, m in b.members.items()} == {
        "c1": MemberState.COMMITTED,
        "c2": MemberState.REVERTED,
        "c3": MemberState.COMMITTED,
        "c4": MemberState.REVERTED,
        "c5": MemberState.CONFIRMED,
    }


def test_a_rollback_waits_in_the_member_until_answered() -> None:
    b = batch(member(1), member(2))
    b.roll_back_in_candidate("c1", WaitingReply(7, "00-trace"))
    assert b.inverses_in_candidate() == ["<inverse 1/>"]
    assert [(m.vlan, r.row_id) for m, r in b.waiting_rollbacks()] == [(1, 7)]
    b.answered(b.members["c1"])
    assert b.waiting_rollbacks() == []


def test_join_and_leave_change_members_and_expiry() -> None:
    b = batch(member(1))
    later = NOW + timedelta(seconds=300)
    b.join({"c2": member(2)}, later)
    assert set(b.members) == {"c1", "c2"} and b.expire_at == later
    b.leave(["c2"])
    assert set(b.members) == {"c1"}


def test_expiring_only_when_open_and_within_the_margin() -> None:
    b = batch(member(1))
    assert not b.expiring(NOW, 1.0)
    assert b.expiring(NOW + timedelta(seconds=119.5), 1.0)
    b.outcome_unknown(Settle.CANCEL)
    assert not b.expiring(NOW + timedelta(seconds=500), 1.0)


def test_the_stored_form_round_trips_and_reads_what_the_old_agent_stored() -> None:
    b = batch(member(1), member(2, MemberState.ROLLED_BACK_IN_CANDIDATE))
    b.members["c2"].rollback = WaitingReply(9, "00-abc")
    stored = b.members_json()
    again = Batch.from_json("idc-1", "sg-edge-1", "open", b.expire_at, stored)
    assert again == b
    # A member as the agent stored it before the typed model (rollback keys optional).
    old = {
        "c1": {
            "saga_id": "s",
            "state": "rollback-edited",
            "inverse": "<x/>",
            "interface": "xe-0/0/1",
            "vlan": 5,
            "after": None,
            "before": LEAVES,
            "sha256": "h",
            "rollback_job": 3,
            "rollback_trace": "t",
        }
    }
    read = Batch.from_json("idc-2", "sg-edge-1", "closed", NOW, old)
    assert read.members["c1"].rollback == WaitingReply(3, "t")
    assert read.members_json() == old


def test_a_follow_up_commit_makes_the_inverses_in_the_candidate_pending() -> None:
    b = batch(member(1), member(2))
    b.roll_back_in_candidate("c1", WaitingReply(7, "00-trace"))
    b.follow_up_committed()
    assert b.members["c1"].state is MemberState.ROLLED_BACK_IN_COMMIT
    assert b.inverses_in_candidate() == [], "a committed inverse is not edited in again"
    assert b.rollback_plan("c1") is RollbackPlan.ALREADY_WAITING
    b.confirmed()
    assert b.members["c1"].state is MemberState.REVERTED


def test_an_undo_carried_for_an_earlier_batch_is_lost_with_a_cancel() -> None:
    earlier = member(1, MemberState.CONFIRMED)
    b = batch(member(2), member(3))
    b.undo_in_candidate("c1", earlier, WaitingReply(8, "00-t"))
    undo = b.members["c1"]
    assert undo.undo and undo.state is MemberState.ROLLED_BACK_IN_CANDIDATE
    assert earlier.state is MemberState.CONFIRMED and not earlier.undo
    assert b.inverses_in_candidate() == ["<inverse 1/>"]
    assert [m.vlan for m in b.undecided()] == [2, 3]
    b.reverted()
    assert undo.state is MemberState.COMMITTED, "still in running: the cancel took its inverse"
    assert b.rollback_plan("c1") is RollbackPlan.APPLY_INVERSE
    again = Batch.from_json("idc-1", "sg-edge-1", "closed", b.expire_at, b.members_json())
    assert again.members["c1"].undo


def test_an_undo_lands_with_the_confirm() -> None:
    b = batch(member(2))
    b.undo_in_candidate("c1", member(1, MemberState.COMMITTED), WaitingReply(8, "00-t"))
    b.follow_up_committed()
    b.confirmed()
    assert b.members["c1"].state is MemberState.REVERTED
