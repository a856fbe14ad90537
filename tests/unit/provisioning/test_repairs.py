"""Four eyes on a repair: who may request, approve and reject, and when it runs."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition, PermissionDenied
from services.provisioning.domain.circuits import Side
from services.provisioning.domain.repairs import (
    Decision,
    DecisionKind,
    Operator,
    Plan,
    RepairState,
    Verdict,
    check_requester,
    decide_approval,
    decide_rejection,
)

SG, CQ = Side.SINGAPORE, Side.CHONGQING
PAYLOADS = {SG: ("sg", "a" * 64), CQ: ("cq", "b" * 64)}
NOW = {SG: "a" * 64, CQ: "b" * 64}
REQUESTER = Operator("pr-sg-1", "sg")


def plan(*decisions: Decision, state: RepairState = RepairState.PENDING_APPROVAL) -> Plan:
    return Plan("rep-1", state, REQUESTER.ref, PAYLOADS, list(decisions))


def test_an_operator_requests_only_a_repair_of_their_own_telcos_router() -> None:
    check_requester(REQUESTER, ["sg", "cq"])
    with pytest.raises(PermissionDenied):
        check_requester(Operator("pr-x", "sg"), ["cq"])
    with pytest.raises(PermissionDenied):
        check_requester(Operator("pr-admin", None), ["sg", "cq"])


def test_each_telco_approves_its_own_router_and_the_last_approval_runs_it() -> None:
    side, verdict = decide_approval(plan(), Operator("pr-cq-1", "cq"), "b" * 64, NOW)
    assert (side, verdict) == (CQ, Verdict.APPROVED)
    cq_approved = Decision(DecisionKind.APPROVED, CQ, "pr-cq-1", "b" * 64)
    side, verdict = decide_approval(plan(cq_approved), Operator("pr-sg-2", "sg"), "a" * 64, NOW)
    assert (side, verdict) == (SG, Verdict.COMPLETE)


def test_the_requester_never_approves_their_own_repair() -> None:
    with pytest.raises(PermissionDenied, match="four eyes"):
        decide_approval(plan(), REQUESTER, "a" * 64, NOW)


def test_a_hash_other_than_the_planned_one_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="not the planned"):
        decide_approval(plan(), Operator("pr-cq-1", "cq"), "c" * 64, NOW)


def test_an_operator_cannot_approve_the_other_telcos_router() -> None:
    with pytest.raises(PermissionDenied, match="only its own router"):
        decide_approval(plan(), Operator("pr-cq-1", "cq"), "a" * 64, NOW)


def test_a_payload_rendered_otherwise_now_supersedes_the_plan() -> None:
    changed = {**NOW, SG: "c" * 64}
    assert (
        decide_approval(plan(), Operator("pr-cq-1", "cq"), "b" * 64, changed)[1]
        is Verdict.SUPERSEDED
    )


def test_an_approval_twice_and_a_decision_on_a_closed_repair_are_refused() -> None:
    cq_approved = Decision(DecisionKind.APPROVED, CQ, "pr-cq-1", "b" * 64)
    with pytest.raises(FailedPrecondition, match="already approved"):
        decide_approval(plan(cq_approved), Operator("pr-cq-2", "cq"), "b" * 64, NOW)
    with pytest.raises(FailedPrecondition, match="REJECTED"):
        decide_approval(plan(state=RepairState.REJECTED), Operator("pr-cq-2", "cq"), "b" * 64, NOW)
    with pytest.raises(FailedPrecondition):
        decide_rejection(plan(state=RepairState.STARTED), Operator("pr-cq-2", "cq"))


def test_rejection_is_for_the_operators_own_side() -> None:
    assert decide_rejection(plan(), Operator("pr-cq-1", "cq")) is CQ
    with pytest.raises(PermissionDenied):
        decide_rejection(plan(), Operator("pr-xx", "xx"))
