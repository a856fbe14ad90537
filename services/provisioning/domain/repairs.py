"""Four eyes on a repair (a redeploy): who may request, approve and reject it, and when it
runs. Plain Python; the adapter is services/provisioning/repairs.py.

A repair is planned like an order: its plan holds each affected router's payload and hash
as rendered when it was requested. Each affected telco's ops approves the payload of their
own router, bound to its hash; the requester never approves (a colleague of the same
telco approves the requester's router). When the circuit's intent or a router's state has
changed since the plan (the payloads rendered now differ), the plan is superseded and a
new repair must be requested. Every decision is an entry of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.errors import FailedPrecondition, PermissionDenied
from services.provisioning.domain.circuits import Side

SYSTEM = "system:provisioning"


class RepairState(enum.StrEnum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    STARTED = "STARTED"
    REJECTED = "REJECTED"
    SUPERSEDED = "SUPERSEDED"


class DecisionKind(enum.StrEnum):
    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    SUPERSEDED = "SUPERSEDED"
    STARTED = "STARTED"


@dataclass(frozen=True)
class Operator:
    """Who acts: the principal's opaque id and telco (None for a principal of no telco)."""

    ref: str
    telco: str | None


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    side: Side | None
    actor: str
    payload_sha256: str = ""


@dataclass(frozen=True)
class Plan:
    repair_id: str
    state: RepairState
    requested_by: str
    # Per affected side: (telco id, planned payload hash).
    payloads: Mapping[Side, tuple[str, str]]
    decisions: Sequence[Decision]


class Verdict(enum.Enum):
    APPROVED = "approved"  # recorded; others still to approve
    COMPLETE = "complete"  # recorded; every payload approved: run it
    SUPERSEDED = "superseded"  # the payloads changed since the plan: record and refuse


def own_side(plan: Plan, operator: Operator) -> Side:
    """The side of ``plan`` whose router belongs to the operator's telco."""
    if not operator.telco:
        raise PermissionDenied("only an operator of a telco acts on a repair of its router")
    for side, (telco, _) in plan.payloads.items():
        if telco == operator.telco:
            return side
    raise PermissionDenied(f"repair {plan.repair_id} changes no router of telco {operator.telco!r}")


def check_requester(operator: Operator, affected_telcos: Sequence[str]) -> None:
    """A telco's ops may request a repair that changes its own router."""
    if not operator.telco:
        raise PermissionDenied("only an operator of a telco may request a repair")
    if operator.telco not in affected_telcos:
        raise PermissionDenied(f"this repair changes no router of telco {operator.telco!r}")


def _check_pending(plan: Plan) -> None:
    if plan.state is not RepairState.PENDING_APPROVAL:
        raise FailedPrecondition(
            f"repair {plan.repair_id} is {plan.state.value}, not waiting for approval"
        )


def _approved_sides(decisions: Sequence[Decision]) -> set[Side]:
    """Sides whose newest decision is an approval."""
    newest: dict[Side, DecisionKind] = {}
    for decision in decisions:
        if decision.side is not None:
            newest[decision.side] = decision.kind
    return {side for side, kind in newest.items() if kind is DecisionKind.APPROVED}


def decide_approval(
    plan: Plan, operator: Operator, payload_sha256: str, rendered_now: Mapping[Side, str]
) -> tuple[Side, Verdict]:
    """Whether ``operator`` may approve their router's payload of ``plan`` with the hash
    they saw, against the payloads as rendered now; raises PermissionDenied or
    FailedPrecondition."""
    side = own_side(plan, operator)
    if operator.ref == plan.requested_by:
        raise PermissionDenied(
            f"four eyes: the requester of repair {plan.repair_id} cannot approve it; "
            "another operator of the telco approves"
        )
    for other, (telco, sha) in plan.payloads.items():
        if other is not side and payload_sha256 == sha:
            raise PermissionDenied(
                f"that is the payload of the {other.name.lower()} router, of telco {telco!r}; "
                f"an operator of telco {operator.telco!r} approves only its own router"
            )
    _check_pending(plan)
    approved = _approved_sides(plan.decisions)
    if side in approved:
        raise FailedPrecondition(f"repair {plan.repair_id} is already approved for {side.name}")
    planned = plan.payloads[side][1]
    if payload_sha256 != planned:
        raise FailedPrecondition(
            f"approved hash {payload_sha256!r} is not the planned payload's {planned}"
        )
    if any(rendered_now.get(s) != sha for s, (_, sha) in plan.payloads.items()):
        return side, Verdict.SUPERSEDED
    complete = approved | {side} == set(plan.payloads)
    return side, Verdict.COMPLETE if complete else Verdict.APPROVED


def decide_rejection(plan: Plan, operator: Operator) -> Side:
    """Any operator of an affected telco (the requester too: a withdrawal) may reject a
    pending repair for their side."""
    side = own_side(plan, operator)
    _check_pending(plan)
    return side
