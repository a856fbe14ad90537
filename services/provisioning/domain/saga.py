"""The two-router saga: what the coordinator does at each reply or deadline (no I/O).

Both routers, or neither:

1. PREPARING: PREPARE to both sides (each router holds a confirmed commit). Until both
   have prepared, any failure or missed deadline rolls both back (ROLLING_BACK -> FAILED).
2. Both prepared -> CONFIRMING: the **decision to confirm** is recorded (the step and
   ``decided_at``, in the same transaction as both CONFIRMs in the outbox), and both
   routers confirm in parallel. From the decision on the saga rolls *forward*: a failed or
   late confirm (e.g. a router reverted at its timeout) re-prepares that side and
   confirms again, up to MAX_ATTEMPTS; only a permanent refusal then compensates the other
   side (ROLLBACK applies the inverse of a confirmed change) and fails the saga. Recovery
   after a coordinator restart rolls forward from the recorded decision too.
3. Both confirmed -> DONE.

A round that failed only for reasons that may pass (a router unreachable, no answer in
time, a lock held: retryable faults) and was rolled back on both routers is not the end:
the saga waits (RETRY_WAIT, backing off) and runs a new round from PREPARING, until its
retry window closes; only then is it FAILED. A permanent refusal (the router's YANG
rejected the payload) fails at once.

A rollback is never given up on unread: an unanswered or failed ROLLBACK is sent again at
each deadline, and a side whose agent has been silent for longer than a prepared commit
can live is settled from a read of its router instead (:meth:`Saga.on_router_read`, the
coordinator's watchdog), as is a CONFIRM nobody answers.

A router payload that no longer matches its approved hash (PAYLOAD_MISMATCH: templates or
inventory changed after approval) ends the saga in REPLAN once both routers are rolled
back: nothing failed, the order needs approval of the new payloads.

A redeploy (put the intended configuration back, whatever a router holds now) runs the
same saga; what each router is sent is chosen from its running configuration by
:func:`repair_operations`, and each side keeps its operation for every round.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.provisioning.domain.circuits import Operation, Side
from services.provisioning.domain.faults import FaultKind, RouterFault
from services.provisioning.domain.observe import Leaves, differences

FIRST, SECOND = Side.SINGAPORE, Side.CHONGQING
MAX_ATTEMPTS = 5
MAX_BACKOFF_S = 60.0


class Step(enum.StrEnum):
    PREPARING = "preparing"
    CONFIRMING = "confirming"
    ROLLING_BACK = "rolling-back"
    RETRY_WAIT = "waiting-to-retry"
    DONE = "done"
    FAILED = "failed"
    REPLAN = "replan"


# Steps of sagas stored while the confirms ran one after the other: both came after both
# prepares, so such a saga carries on under the decision to confirm.
STEP_OF_STORED = {"confirming-first": Step.CONFIRMING, "confirming-second": Step.CONFIRMING}


class Held(enum.Enum):
    """What a router's running configuration holds of a saga's circuit (nothing pending)."""

    TARGET = 1  # the saga's change
    PREVIOUS = 2  # what was there before the saga
    OTHER = 3  # neither: someone else's change, or a half-applied one


def held_of(
    actual: Leaves | None, target: Leaves | None, previous: Leaves | None, *, known: bool = True
) -> Held:
    """What a router holds of a circuit end: ``actual`` (its sub-interface's running leaves,
    None when absent) against the saga's ``target`` and the ``previous`` state (None:
    absent; ``known`` False when the saga does not know it, e.g. a redeploy's)."""
    if not differences(target, actual):
        return Held.TARGET
    if known and not differences(previous, actual):
        return Held.PREVIOUS
    return Held.OTHER


class Action(enum.Enum):
    PREPARE = 1
    CONFIRM = 2
    ROLLBACK = 3


@dataclass(frozen=True)
class Send:
    """Send ``action`` to ``side``'s agent."""

    side: Side
    action: Action
    persist_id: str
    attempt: int
    # The command the side already awaits, sent again (its wait goes on from the first).
    again: bool = False


@dataclass
class SideState:
    persist_id: str = ""
    prepared: bool = False
    confirmed: bool = False
    rolled_back: bool = False
    awaiting: str = ""  # action name awaited, '' when none
    command_id: str = ""  # event id of the command awaited
    sent_at: str = ""  # ISO time the command awaited was first sent
    attempt: int = 0
    fault: dict[str, Any] | None = None
    # The hash of the payload the agent rendered (replied to PREPARE, also on a mismatch).
    rendered_sha256: str = ""
    # The circuit operation this side renders when it is not the saga's (a redeploy
    # creating the circuit on a router that lacks it); 0: the saga's.
    operation: int = 0


def repair_operations(present: Mapping[Side, bool]) -> dict[Side, Operation]:
    """What a redeploy renders on each router, from whether the router holds the circuit's
    sub-interface now: CREATE where it is absent (a MODIFY needs the interface and
    sub-interface to exist; an empty router refuses it), MODIFY where it is present in any
    state (its template replaces the whole sub-interface with the intended one)."""
    return {side: Operation.MODIFY if held else Operation.CREATE for side, held in present.items()}


def extended_deadline(
    sent_at: datetime,
    now: datetime,
    last_heard: Sequence[datetime | None],
    step_deadline_s: float,
    max_wait_s: float,
) -> datetime | None:
    """When a step's deadline passes: the new deadline if every awaited router's agent was
    heard from (a reply to any command) within the last ``step_deadline_s`` (it is alive,
    working through a queue), at most ``max_wait_s`` after the commands were sent; None to
    act on the missed deadline now. An agent not heard from is timed out as before."""
    if not last_heard or any(heard is None for heard in last_heard):
        return None
    quietest = min(heard for heard in last_heard if heard is not None)
    extended = min(
        quietest + timedelta(seconds=step_deadline_s), sent_at + timedelta(seconds=max_wait_s)
    )
    return extended if extended > now else None


@dataclass
class Saga:
    step: Step = Step.PREPARING
    sides: dict[str, SideState] = field(
        default_factory=lambda: {s.name: SideState() for s in (FIRST, SECOND)}
    )
    reason: str = ""
    round: int = 1
    # ISO time after which a failed round is final; '' never retries.
    retry_until: str = ""
    # ISO time both routers had prepared and the saga decided to confirm; '' before.
    decided_at: str = ""

    @property
    def finished(self) -> bool:
        return self.step in (Step.DONE, Step.FAILED, Step.REPLAN)

    def side(self, side: Side) -> SideState:
        return self.sides[side.name]

    def awaited(self) -> list[Side]:
        """The sides whose reply the saga is waiting for."""
        return [side for side in (FIRST, SECOND) if self.side(side).awaiting]

    def faults(self) -> list[tuple[Side, RouterFault, bool]]:
        found = []
        for side in (FIRST, SECOND):
            state = self.side(side)
            if state.fault is not None:
                fault = RouterFault(**{**state.fault, "kind": FaultKind(state.fault["kind"])})
                found.append((side, fault, state.rolled_back or not state.confirmed))
        return found

    # -- persistence --------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step.value,
            "reason": self.reason,
            "round": self.round,
            "retry_until": self.retry_until,
            "decided_at": self.decided_at,
            "sides": {name: vars(state) for name, state in self.sides.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Saga:
        return cls(
            step=STEP_OF_STORED.get(data["step"]) or Step(data["step"]),
            sides={name: SideState(**state) for name, state in data["sides"].items()},
            reason=data.get("reason", ""),
            round=data.get("round", 1),
            retry_until=data.get("retry_until", ""),
            decided_at=data.get("decided_at", ""),
        )

    # -- transitions --------------------------------------------------------------------

    def start(self) -> list[Send]:
        self.step = Step.PREPARING
        return [self._send(FIRST, Action.PREPARE), self._send(SECOND, Action.PREPARE)]

    def _send(self, side: Side, action: Action, attempt: int | None = None) -> Send:
        state = self.side(side)
        again = state.awaiting == action.name
        state.awaiting = action.name
        state.attempt = attempt if attempt is not None else state.attempt + 1
        return Send(side, action, state.persist_id, state.attempt, again)

    def expects(self, side: Side, action: Action, command_id: str) -> bool:
        """Whether a reply answers the command this saga is waiting for (else stale)."""
        state = self.side(side)
        return state.awaiting == action.name and state.command_id == command_id

    def on_reply(
        self,
        side: Side,
        action: Action,
        success: bool,
        *,
        persist_id: str = "",
        fault: RouterFault | None = None,
        rendered_sha256: str = "",
        now: datetime,
    ) -> list[Send]:
        state = self.side(side)
        state.awaiting = ""
        if action is Action.PREPARE:
            state.rendered_sha256 = rendered_sha256
        if fault is not None:
            state.fault = {**vars(fault), "kind": fault.kind.value}
        if action is Action.PREPARE:
            if success:
                state.prepared, state.persist_id, state.fault = True, persist_id, None
            return self._after_prepare(side, success, fault, now)
        if action is Action.CONFIRM:
            if success:
                state.confirmed, state.fault = True, None
            return self._after_confirm(side, success, fault)
        state.rolled_back = success
        if not success:
            return self._retry_rollback(side, fault)
        return self._rollback_answered(now)

    def _rollback_answered(self, now: datetime) -> list[Send]:
        if all(not s.awaiting for s in self.sides.values()):
            self._rolled_back(now)
        return []

    def _rolled_back(self, now: datetime) -> None:
        """Both rollbacks answered: retry the round if every fault may pass, else fail."""
        faults = [s.fault for s in self.sides.values() if s.fault is not None]
        all_back = all(s.rolled_back for s in self.sides.values())
        if all_back and any(FaultKind(f["kind"]) is FaultKind.PAYLOAD_MISMATCH for f in faults):
            self.step = Step.REPLAN
            return
        retryable = bool(faults) and all(
            f["retryable"] or FaultKind(f["kind"]) in (FaultKind.TIMEOUT, FaultKind.TRANSPORT)
            for f in faults
        )
        in_window = bool(self.retry_until) and now < datetime.fromisoformat(self.retry_until)
        self.step = Step.RETRY_WAIT if retryable and all_back and in_window else Step.FAILED

    def backoff_s(self, base_s: float) -> float:
        """How long to wait before the next round: doubling per round, capped."""
        return float(min(MAX_BACKOFF_S, base_s * 2 ** (self.round - 1)))

    def _next_round(self) -> list[Send]:
        self.round += 1
        self.reason, self.decided_at = "", ""
        self.sides = {s.name: SideState() for s in (FIRST, SECOND)}
        return self.start()

    def _after_prepare(
        self, side: Side, success: bool, fault: RouterFault | None, now: datetime
    ) -> list[Send]:
        if self.step is Step.CONFIRMING:
            # Rolling forward under the decision: this side prepared again.
            if success:
                return [self._send(side, Action.CONFIRM)]
            return self._roll_forward(side, fault)
        if self.step is not Step.PREPARING:
            return []
        if not success:
            self.reason = f"{side.name.lower()} router refused: {fault.message if fault else ''}"
            return self._roll_back_all()
        if all(s.prepared for s in self.sides.values()):
            self.step, self.decided_at = Step.CONFIRMING, now.isoformat()
            return [self._send(FIRST, Action.CONFIRM), self._send(SECOND, Action.CONFIRM)]
        return []

    def _after_confirm(self, side: Side, success: bool, fault: RouterFault | None) -> list[Send]:
        if self.step is not Step.CONFIRMING:
            return []
        if not success:
            return self._roll_forward(side, fault)
        if all(s.confirmed for s in self.sides.values()):
            self.step = Step.DONE
        return []

    def _roll_forward(self, side: Side, fault: RouterFault | None) -> list[Send]:
        """A side failed or missed its deadline after the decision to confirm: prepare it
        again, unless the refusal is permanent or it has had its attempts; then the other
        side is compensated and the saga fails."""
        state = self.side(side)
        permanent = (
            fault is not None and not fault.retryable and fault.kind is not FaultKind.TIMEOUT
        )
        if permanent or state.attempt >= MAX_ATTEMPTS:
            self.reason = (
                f"{side.name.lower()} failed after both routers prepared: "
                f"{fault.message if fault else 'no answer in time'}; "
                f"{_other(side).name.lower()} compensated"
            )
            return self._roll_back_all()
        state.prepared, state.persist_id = False, ""
        return [self._send(side, Action.PREPARE)]

    def _retry_rollback(self, side: Side, fault: RouterFault | None) -> list[Send]:
        """A ROLLBACK the agent answered as failed (it read the router): send it again, up
        to MAX_ATTEMPTS; then the saga fails with the change left on that router."""
        if self.side(side).attempt >= MAX_ATTEMPTS:
            self.step = Step.FAILED
            self.reason += (
                f"; rollback on {side.name.lower()} failed: {fault.message if fault else ''}"
            )
            return []
        return [self._send(side, Action.ROLLBACK)]

    def _roll_back_all(self) -> list[Send]:
        self.step = Step.ROLLING_BACK
        return [self._send(side, Action.ROLLBACK, attempt=1) for side in (FIRST, SECOND)]

    def recover(self, carries: Mapping[Side, bool]) -> list[Send]:
        """After the coordinator restarted: drive on from what each router's running
        configuration shows (``carries[side]``: it matches the saga's target state).

        A command sent again is answered again (a confirm of a confirmed commit verifies, a
        rollback of a reverted one too), and the reply to the lost one is ignored as stale.
        PREPARING needs nothing (the prepares are in the outbox, the deadline covers lost
        replies), nor does RETRY_WAIT.
        """
        if self.step is Step.CONFIRMING:
            # Roll forward from the recorded decision: confirm what the router still
            # carries (confirmed or pending), prepare again what it lost. A side preparing
            # again has its PREPARE out; its reply or deadline drives it.
            sends: list[Send] = []
            for side in (FIRST, SECOND):
                state = self.side(side)
                if state.confirmed or not state.prepared or self.step is not Step.CONFIRMING:
                    continue
                if carries[side]:
                    sends.append(self._send(side, Action.CONFIRM))
                else:
                    sends += self._roll_forward(side, None)
            return sends
        if self.step is Step.ROLLING_BACK:
            return [
                self._send(side, Action.ROLLBACK)
                for side in (FIRST, SECOND)
                if self.side(side).awaiting
            ]
        return []

    def on_deadline(self) -> list[Send]:
        """The awaited replies did not come in time (or the retry wait is over)."""
        if self.step is Step.RETRY_WAIT:
            return self._next_round()
        late = self.awaited()
        if self.step is Step.PREPARING:
            names = ", ".join(s.name.lower() for s in late)
            self.reason = f"no answer in time from {names}"
            for side in late:
                self.side(side).fault = _fault(side, FaultKind.TIMEOUT, self.reason)
            return self._roll_back_all()
        if self.step is Step.CONFIRMING:
            sends: list[Send] = []
            for side in late:
                if self.step is Step.CONFIRMING:
                    sends += self._roll_forward(side, None)
            return sends
        if self.step is Step.ROLLING_BACK:
            # Never given up unread: sent again until answered, or settled from a read of
            # the router (on_router_read) once its agent has been silent too long.
            return [self._send(side, Action.ROLLBACK) for side in late]
        return []

    def on_router_read(self, side: Side, held: Held, now: datetime) -> list[Send]:
        """The watchdog read ``side``'s router, whose agent has been silent for longer than
        a prepared commit can live, found no commit pending on it, and saw ``held``: settle
        the command awaited from that side as the router shows it.

        A ROLLBACK is answered by the previous state; a CONFIRM (or a PREPARE rolling
        forward) by the target state: that side is confirmed. A side that lost its change
        after the decision cannot be rolled forward without its agent: the other side is
        compensated. Anything else stays awaited (an agent must act on it)."""
        state = self.side(side)
        name = side.name.lower()
        if state.awaiting == Action.ROLLBACK.name and held is Held.PREVIOUS:
            state.awaiting, state.rolled_back = "", True
            return self._rollback_answered(now)
        if self.step is not Step.CONFIRMING or not state.awaiting:
            return []
        if held is Held.TARGET:
            state.awaiting, state.confirmed = "", True
            return self._after_confirm(side, True, None)
        if held is Held.PREVIOUS:
            self.reason = (
                f"{name}'s agent went silent after both routers prepared and its router "
                f"holds the previous state (read from running); "
                f"{_other(side).name.lower()} compensated"
            )
            state.fault = _fault(side, FaultKind.TIMEOUT, self.reason)
            state.awaiting, state.rolled_back = "", True
            self.step = Step.ROLLING_BACK
            return [self._send(_other(side), Action.ROLLBACK, attempt=1)]
        return []


def _other(side: Side) -> Side:
    return SECOND if side is FIRST else FIRST


def _fault(side: Side, kind: FaultKind, message: str) -> dict[str, Any]:
    """A fault as the saga stores it (retryable: a passing reason)."""
    return {**vars(RouterFault(kind, side.name, message, retryable=True)), "kind": kind.value}
