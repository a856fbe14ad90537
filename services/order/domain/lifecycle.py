"""What happens to orders, circuits and approvals: the state machines in one place.

Order:    ACKNOWLEDGED -> PENDING_APPROVAL -> APPROVED -> IN_PROGRESS -> COMPLETED | FAILED
          APPROVED -> COMPLETED | FAILED (an outcome that came before any progress)
          PENDING_APPROVAL -> REJECTED (a telco rejects, the approval window passes, or
                              a plan or replan carries no renderable payload: nothing
                              could ever be approved, so the order does not wait)
          ACKNOWLEDGED | PENDING_APPROVAL -> CANCELLED (by the customer)
          APPROVED | IN_PROGRESS -> PENDING_APPROVAL (a replan, see ``decide_plan``)
          PENDING_APPROVAL -> SCHEDULED -> APPROVED (an order with a start time: approved,
                              then handed to provisioning at its start, without a person)
          SCHEDULED -> CANCELLED (by the customer before the start, or with its boost)
          SCHEDULED -> FAILED (the start could not happen: the circuit is no longer ACTIVE)
An order becomes APPROVED when both telcos approved the current router payloads; the
OrderApproved event written in that same transaction hands it to provisioning, so from
APPROVED on the routers may already be changing and the order can no longer be cancelled.
The first ProvisioningProgress (the saga started) makes it IN_PROGRESS; every later one
only records the step, which the customer sees (see ``decide_progress``).
Provisioning refuses to run a payload whose hash is not the approved one; it rolls both
routers back and sends a replan, which returns the order to approval with the new plan.
Every terminal state releases the order's reservation.

Circuit, by order type and outcome (see ``circuit_state_after``):
  NEW:        RESERVED -> PROVISIONING -> ACTIVE | FAILED; RESERVED -> DISCONNECTED when the
              order is rejected, cancelled or expires (the circuit was never built);
              PROVISIONING -> RESERVED on a replan.
  CHANGE:     ACTIVE -> MODIFYING -> ACTIVE (new or old bandwidth; also on a replan).
  DISCONNECT: ACTIVE -> DISCONNECTING -> DISCONNECTED | ACTIVE (also on a replan).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition, PermissionDenied
from services.order.domain.catalogue import Side


class OrderType(enum.StrEnum):
    NEW = "NEW"
    CHANGE = "CHANGE"
    DISCONNECT = "DISCONNECT"


class OrderState(enum.StrEnum):
    ACKNOWLEDGED = "ACKNOWLEDGED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SCHEDULED = "SCHEDULED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_ORDER_STATES


TERMINAL_ORDER_STATES = frozenset(
    {OrderState.COMPLETED, OrderState.REJECTED, OrderState.FAILED, OrderState.CANCELLED}
)


class CircuitState(enum.StrEnum):
    RESERVED = "RESERVED"
    PROVISIONING = "PROVISIONING"
    ACTIVE = "ACTIVE"
    MODIFYING = "MODIFYING"
    DISCONNECTING = "DISCONNECTING"
    DISCONNECTED = "DISCONNECTED"
    FAILED = "FAILED"


# Circuits whose bandwidth is committed on the channel (it carries traffic).
COMMITTED_CIRCUIT_STATES = frozenset(
    {CircuitState.ACTIVE, CircuitState.MODIFYING, CircuitState.DISCONNECTING}
)
# Circuits whose VLANs are held on their ports.
LIVE_CIRCUIT_STATES = frozenset(CircuitState) - {CircuitState.DISCONNECTED, CircuitState.FAILED}


class ApprovalState(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    SUPERSEDED = "SUPERSEDED"

    @property
    def awaiting_decision(self) -> bool:
        return self in {ApprovalState.PENDING, ApprovalState.SUPERSEDED}


class Outcome(enum.StrEnum):
    """How an order ended, as far as its circuit is concerned."""

    APPROVED = "APPROVED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    WITHDRAWN = "WITHDRAWN"  # rejected, cancelled or expired before provisioning
    REPLANNED = "REPLANNED"  # back to approval; provisioning left both routers unchanged


_ALLOWED: Mapping[OrderState, frozenset[OrderState]] = {
    OrderState.ACKNOWLEDGED: frozenset({OrderState.PENDING_APPROVAL, OrderState.CANCELLED}),
    OrderState.PENDING_APPROVAL: frozenset(
        {OrderState.APPROVED, OrderState.SCHEDULED, OrderState.REJECTED, OrderState.CANCELLED}
    ),
    OrderState.SCHEDULED: frozenset(
        {OrderState.APPROVED, OrderState.CANCELLED, OrderState.FAILED}
    ),
    OrderState.APPROVED: frozenset(
        {OrderState.IN_PROGRESS, OrderState.COMPLETED, OrderState.FAILED,
         OrderState.PENDING_APPROVAL}
    ),
    OrderState.IN_PROGRESS: frozenset(
        {OrderState.COMPLETED, OrderState.FAILED, OrderState.PENDING_APPROVAL}
    ),
}


def can_transition(current: OrderState, target: OrderState) -> bool:
    return target in _ALLOWED.get(current, frozenset())


def check_transition(current: OrderState, target: OrderState, order_id: str) -> None:
    if not can_transition(current, target):
        raise FailedPrecondition(
            f"order {order_id} is {current} and cannot become {target}"
        )


def check_cancellable(state: OrderState, order_id: str, *, starts_at: datetime | None = None,
                      moment: datetime | None = None, boost_order_id: str | None = None
                      ) -> None:
    """A customer may cancel an order before approval, or a scheduled one before its start;
    a revert goes only with its boost."""
    if boost_order_id and not state.terminal:
        raise FailedPrecondition(
            f"order {order_id} reverts boost {boost_order_id} and is not cancelled on its "
            f"own; cancel the boost {boost_order_id} before it starts instead")
    if state in (OrderState.ACKNOWLEDGED, OrderState.PENDING_APPROVAL):
        return
    if state is OrderState.SCHEDULED:
        if starts_at is not None and moment is not None and moment < starts_at:
            return
        raise FailedPrecondition(
            f"order {order_id} was due to start at "
            f"{starts_at.isoformat() if starts_at else 'its approval'} and is being handed to "
            "provisioning; it can no longer be cancelled")
    if state.terminal:
        raise FailedPrecondition(f"order {order_id} is already {state}; nothing to cancel")
    raise FailedPrecondition(
        f"order {order_id} is {state}: both telcos approved and provisioning on the routers "
        "has started, so it can no longer be cancelled; once it completes, change or "
        "disconnect the circuit instead"
    )


def check_circuit_open_for_order(
    state: CircuitState, pending_order_id: str | None, circuit_id: str
) -> None:
    """CHANGE and DISCONNECT orders need an ACTIVE circuit with no other order on it."""
    if pending_order_id:
        raise FailedPrecondition(
            f"circuit {circuit_id} already has order {pending_order_id} in progress; wait for "
            "it to end or cancel it"
        )
    if state is not CircuitState.ACTIVE:
        raise FailedPrecondition(f"circuit {circuit_id} is {state}; only ACTIVE circuits can "
                                 "be changed or disconnected")


def circuit_state_after(order_type: OrderType, outcome: Outcome, current: CircuitState
                        ) -> CircuitState:
    if order_type is OrderType.NEW:
        return {
            Outcome.APPROVED: CircuitState.PROVISIONING,
            Outcome.SUCCEEDED: CircuitState.ACTIVE,
            Outcome.FAILED: CircuitState.FAILED,
            Outcome.WITHDRAWN: CircuitState.DISCONNECTED,
            Outcome.REPLANNED: CircuitState.RESERVED,
        }[outcome]
    if outcome is Outcome.APPROVED:
        return (CircuitState.MODIFYING if order_type is OrderType.CHANGE
                else CircuitState.DISCONNECTING)
    if order_type is OrderType.DISCONNECT and outcome is Outcome.SUCCEEDED:
        return CircuitState.DISCONNECTED
    # A finished change, or a failed/withdrawn/replanned change or disconnect: the circuit
    # carries on as it was.
    return CircuitState.ACTIVE if current in COMMITTED_CIRCUIT_STATES else current


@dataclass(frozen=True)
class ApprovalSlot:
    """One telco's approval of an order, as the decision logic needs it."""

    side: Side
    state: ApprovalState
    payload_sha256: str


@dataclass(frozen=True)
class Approver:
    subject: str
    telco: str
    side: Side | None  # None when the telco runs no side of this channel


def after_approval(starts_at: datetime | None, moment: datetime) -> OrderState:
    """Where an order goes once both telcos approved: to provisioning now, or SCHEDULED
    until a start still ahead."""
    if starts_at is not None and starts_at > moment:
        return OrderState.SCHEDULED
    return OrderState.APPROVED


def check_approver(order_state: OrderState, order_id: str, requested_by: str,
                   approver: Approver) -> Side:
    if approver.side is None:
        raise PermissionDenied(
            f"telco {approver.telco!r} runs no side of this channel; it cannot approve or "
            "reject orders"
        )
    if order_state is not OrderState.PENDING_APPROVAL:
        raise FailedPrecondition(
            f"order {order_id} is {order_state}, not PENDING_APPROVAL; there is nothing to "
            "decide"
        )
    if approver.subject == requested_by:
        raise PermissionDenied(
            f"you ({approver.subject}) requested order {order_id}; another person of your "
            "telco must decide on it (four-eyes rule)"
        )
    return approver.side


def decide_approval(
    order_state: OrderState,
    order_id: str,
    requested_by: str,
    approver: Approver,
    slots: Mapping[Side, ApprovalSlot],
    current_plan_sha256: str | None,
    plan_error: str | None,
    presented_sha256: str,
) -> bool:
    """Check an approval; return True when it completes the order's approvals."""
    side = check_approver(order_state, order_id, requested_by, approver)
    slot = slots[side]
    if slot.state is ApprovalState.APPROVED:
        raise FailedPrecondition(
            f"your telco already approved order {order_id} (payload {slot.payload_sha256})"
        )
    if plan_error:
        raise FailedPrecondition(
            f"the router payload for order {order_id} could not be rendered ({plan_error}); "
            "it cannot be approved, reject it with a reason"
        )
    if current_plan_sha256 is None:
        raise FailedPrecondition(
            f"the router payload for order {order_id} is not rendered yet; reload "
            "ListPendingApprovals in a moment and approve the payload it shows"
        )
    if presented_sha256 != current_plan_sha256:
        raise FailedPrecondition(
            f"the router payload for order {order_id} has changed since you reviewed it "
            f"(current sha256 {current_plan_sha256}); reload ListPendingApprovals, review the "
            "new payload and approve that"
        )
    others = [s for other_side, s in slots.items() if other_side is not side]
    return all(s.state is ApprovalState.APPROVED for s in others)


def superseded_by_plan(slots: Mapping[Side, ApprovalSlot], new_hashes: Mapping[Side, str]
                       ) -> list[Side]:
    """Sides whose approval no longer holds because their payload changed."""
    return [
        side for side, slot in slots.items()
        if slot.state is ApprovalState.APPROVED
        and new_hashes.get(side) != slot.payload_sha256
    ]


@dataclass(frozen=True)
class PlanContent:
    """What a plan says: each side's payload hash, or why no payload could be rendered."""

    hashes: Mapping[Side, str]
    error: str | None


class PlanVerdict(enum.StrEnum):
    IGNORE = "IGNORE"
    # The order awaits approval: the plan replaces the previous one.
    REPLACE = "REPLACE"
    # A replan of an approved order: back to PENDING_APPROVAL with the plan.
    BACK_TO_APPROVAL = "BACK_TO_APPROVAL"
    # A plan without payloads: nothing can ever be approved, so the order is rejected (an
    # approved order goes back to approval first, see ``PlanDecision.via_approval``).
    REJECT = "REJECT"


@dataclass(frozen=True)
class PlanDecision:
    verdict: PlanVerdict
    # Sides whose approval no longer holds (their payload hash changed).
    superseded: tuple[Side, ...] = ()
    # Why a plan is ignored, for the log.
    why_ignored: str = ""
    # REJECT of an order handed to provisioning: it returns to PENDING_APPROVAL first, so
    # the audit trail shows the approval that no longer holds.
    via_approval: bool = False


def decide_plan(order_state: OrderState, slots: Mapping[Side, ApprovalSlot],
                current: PlanContent, new: PlanContent, *, replan: bool) -> PlanDecision:
    """What a ProvisioningPlanned does to an order.

    A plan equal to the current one changes nothing: this is how a second replan event for
    the same payloads (or a stale one from an earlier saga) is recognised, since a real
    replan always carries a hash that differs from an approved one.
    """
    if order_state not in (OrderState.PENDING_APPROVAL, OrderState.APPROVED,
                           OrderState.IN_PROGRESS):
        return PlanDecision(PlanVerdict.IGNORE, why_ignored=f"the order is {order_state}")
    if dict(new.hashes) == dict(current.hashes) and new.error == current.error:
        return PlanDecision(PlanVerdict.IGNORE,
                            why_ignored="it is the plan already recorded for the order")
    if order_state is OrderState.PENDING_APPROVAL:
        return PlanDecision(PlanVerdict.REJECT if new.error else PlanVerdict.REPLACE,
                            tuple(superseded_by_plan(slots, new.hashes)))
    if not replan:
        return PlanDecision(PlanVerdict.IGNORE, why_ignored=(
            f"the order is {order_state} and only a replan sends it back to approval"))
    if new.error:
        return PlanDecision(PlanVerdict.REJECT, tuple(superseded_by_plan(slots, {})),
                            via_approval=True)
    return PlanDecision(PlanVerdict.BACK_TO_APPROVAL,
                        tuple(superseded_by_plan(slots, new.hashes)))


class ProgressVerdict(enum.StrEnum):
    # The first step reported for an approved order: APPROVED -> IN_PROGRESS.
    START = "START"
    # A later step of an order in progress: recorded, the state stays.
    STEP = "STEP"
    IGNORE = "IGNORE"


@dataclass(frozen=True)
class ProgressDecision:
    verdict: ProgressVerdict
    # Why a report is ignored, for the log.
    why_ignored: str = ""


def decide_progress(order_state: OrderState) -> ProgressDecision:
    """What a ProvisioningProgress does to an order. Reports come in the order the saga
    made them (one partition per circuit), so the last one received is the last step; one
    for an order no longer handed to provisioning (ended, or sent back to approval) is
    late and changes nothing."""
    if order_state is OrderState.APPROVED:
        return ProgressDecision(ProgressVerdict.START)
    if order_state is OrderState.IN_PROGRESS:
        return ProgressDecision(ProgressVerdict.STEP)
    return ProgressDecision(ProgressVerdict.IGNORE,
                            f"the order is {order_state}, not with provisioning")
