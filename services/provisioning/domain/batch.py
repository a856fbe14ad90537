"""A router batch: one confirmed commit on one router holding one or more circuits (no I/O).

A router holds one pending confirmed commit at a time, so every PREPARE queued for it at
that moment goes into one batch, and later ones join it (a follow-up confirmed commit with
the same persist id). Each circuit is a :class:`Member` whose state says where it stands
on the router:

* ``UNDECIDED``: in the pending commit, no decision yet;
* ``ROLLED_BACK_IN_CANDIDATE``: its inverse is edited into the candidate (the saga rolled
  it back while others of the batch wait); running still shows it until the batch ends;
* ``ROLLED_BACK_IN_COMMIT``: that inverse went into the pending commit with a follow-up
  commit (a circuit joining); running no longer shows it, and the inverse is not edited in
  again (the router would refuse a create twice); the batch's end makes it final;
* ``COMMITTED``: in running for good (the batch was confirmed), not yet confirmed itself;
* ``CONFIRMED``: its CONFIRM was answered;
* ``REVERTED``: not in running (cancelled, expired, or its inverse applied).

A member marked ``undo`` was in running for good before this batch (an earlier batch
confirmed it): its saga rolled it back while this batch held the candidate lock, so this
batch carries only its inverse. Cancelling the batch takes that inverse away with the rest,
which leaves the member in running (``COMMITTED``); its ROLLBACK then fails and is sent
again.

The batch is ``OPEN`` while its commit is pending, ``CLOSED`` once it is confirmed or gone,
and ``SETTLE_CONFIRM`` / ``SETTLE_CANCEL`` when a step's outcome is unknown (no answer, a
dropped session): then nothing else is done on the router until the batch is settled by its
persist id the way the saga decided (confirm when a CONFIRM was being carried out, cancel
otherwise) and each member is recorded as what running holds. The router's own timeout
may have reverted the commit meanwhile (the devstack's netconfd does, once it has been
idle for a second), which a settle finds as "not pending" and reads the same way: the
outcome is always read, never assumed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.provisioning.domain.observe import Leaves, SubinterfaceKey, differences


class MemberState(enum.StrEnum):
    UNDECIDED = "undecided"
    ROLLED_BACK_IN_CANDIDATE = "rollback-edited"
    ROLLED_BACK_IN_COMMIT = "rollback-committed"
    COMMITTED = "committed"
    CONFIRMED = "confirmed"
    REVERTED = "reverted"


IN_RUNNING_FOR_GOOD = (MemberState.COMMITTED, MemberState.CONFIRMED)
ROLLED_BACK_PENDING = (MemberState.ROLLED_BACK_IN_CANDIDATE, MemberState.ROLLED_BACK_IN_COMMIT)
IN_QUESTION = (MemberState.UNDECIDED, *ROLLED_BACK_PENDING)


class BatchState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    SETTLE_CONFIRM = "settle-confirm"
    SETTLE_CANCEL = "settle-cancel"


UNRESOLVED = (BatchState.OPEN, BatchState.SETTLE_CONFIRM, BatchState.SETTLE_CANCEL)


class Settle(enum.Enum):
    """How a batch whose outcome is not known is ended, by its persist id."""

    CONFIRM = "confirm"
    CANCEL = "cancel"


class RollbackPlan(enum.Enum):
    """What a ROLLBACK of one member needs on the router."""

    CANCEL_BATCH = "cancel the batch (the last undecided member)"
    EDIT_INVERSE = "edit the inverse into the candidate; answered when the batch ends"
    ALREADY_WAITING = "inverse already in the candidate; answered when the batch ends"
    APPLY_INVERSE = "apply the inverse in a transaction of its own"
    VERIFY = "already reverted: verify running"


@dataclass(frozen=True)
class WaitingReply:
    """A queued command answered when its batch ends (the row and its trace)."""

    row_id: int
    traceparent: str


@dataclass
class Member:
    saga_id: str
    state: MemberState
    inverse: str
    interface: str
    vlan: int
    # The circuit's leaves in running after the step (None: absent), and before it.
    after: Leaves | None
    before: Leaves | None
    sha256: str
    rollback: WaitingReply | None = None
    undo: bool = False

    @property
    def key(self) -> SubinterfaceKey:
        return (self.interface, self.vlan)

    def applied_in(self, running: Mapping[SubinterfaceKey, Leaves]) -> bool:
        """Whether ``running`` holds what this member meant to leave there."""
        have = running.get(self.key)
        return have is None if self.after is None else not differences(self.after, have)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "saga_id": self.saga_id,
            "state": self.state.value,
            "inverse": self.inverse,
            "interface": self.interface,
            "vlan": self.vlan,
            "after": self.after,
            "before": self.before,
            "sha256": self.sha256,
        }
        if self.rollback is not None:
            data["rollback_job"] = self.rollback.row_id
            data["rollback_trace"] = self.rollback.traceparent
        if self.undo:
            data["undo"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Member:
        rollback = (
            WaitingReply(int(data["rollback_job"]), str(data.get("rollback_trace", "")))
            if data.get("rollback_job")
            else None
        )
        return cls(
            saga_id=str(data["saga_id"]),
            state=MemberState(data["state"]),
            inverse=str(data["inverse"]),
            interface=str(data["interface"]),
            vlan=int(data["vlan"]),
            after=data.get("after"),
            before=data.get("before"),
            sha256=str(data.get("sha256", "")),
            rollback=rollback,
            undo=bool(data.get("undo", False)),
        )


@dataclass
class Batch:
    persist_id: str
    router_name: str
    expire_at: datetime
    members: dict[str, Member] = field(default_factory=dict)
    state: BatchState = BatchState.OPEN

    # -- queries ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state is BatchState.OPEN

    @property
    def settle(self) -> Settle | None:
        """How the batch is to be settled, when its outcome is not known."""
        return {
            BatchState.SETTLE_CONFIRM: Settle.CONFIRM,
            BatchState.SETTLE_CANCEL: Settle.CANCEL,
        }.get(self.state)

    def holds(self, circuit_id: str, saga_id: str) -> bool:
        member = self.members.get(circuit_id)
        return member is not None and member.saga_id == saga_id

    def undecided(self) -> list[Member]:
        return [m for m in self.members.values() if m.state is MemberState.UNDECIDED]

    def inverses_in_candidate(self) -> list[str]:
        """The inverses edited into the candidate so far (kept when it is rebuilt)."""
        return [
            m.inverse
            for m in self.members.values()
            if m.state is MemberState.ROLLED_BACK_IN_CANDIDATE
        ]

    def keys(self) -> list[SubinterfaceKey]:
        return [m.key for m in self.members.values()]

    def waiting_rollbacks(self) -> list[tuple[Member, WaitingReply]]:
        return [(m, m.rollback) for m in self.members.values() if m.rollback is not None]

    def expiring(self, now: datetime, margin_s: float) -> bool:
        """Whether an open batch is within ``margin_s`` of its router timeout."""
        return self.is_open and self.expire_at - timedelta(seconds=margin_s) <= now

    def rollback_plan(self, circuit_id: str) -> RollbackPlan:
        member = self.members[circuit_id]
        if self.is_open and member.state is MemberState.UNDECIDED:
            if len(self.undecided()) == 1:
                return RollbackPlan.CANCEL_BATCH
            return RollbackPlan.EDIT_INVERSE
        if self.is_open and member.state in ROLLED_BACK_PENDING:
            return RollbackPlan.ALREADY_WAITING
        if member.state in IN_RUNNING_FOR_GOOD:
            return RollbackPlan.APPLY_INVERSE
        return RollbackPlan.VERIFY

    # -- transitions --------------------------------------------------------------------

    def join(self, members: Mapping[str, Member], expire_at: datetime) -> None:
        """New members in the pending commit (a follow-up confirmed commit restarts the
        router's timeout)."""
        self.members = {**self.members, **members}
        self.expire_at = expire_at

    def leave(self, circuits: Iterable[str]) -> None:
        """Members whose follow-up commit was refused (nothing of them applied)."""
        gone = set(circuits)
        self.members = {c: m for c, m in self.members.items() if c not in gone}

    def roll_back_in_candidate(self, circuit_id: str, reply: WaitingReply) -> None:
        member = self.members[circuit_id]
        member.state = MemberState.ROLLED_BACK_IN_CANDIDATE
        member.rollback = reply

    def undo_in_candidate(self, circuit_id: str, member: Member, reply: WaitingReply) -> None:
        """The inverse of ``member`` (in running for good, from an earlier batch) is edited
        into this batch's candidate: it lands when the batch is confirmed."""
        self.members = {
            **self.members,
            circuit_id: replace(
                member, state=MemberState.ROLLED_BACK_IN_CANDIDATE, rollback=reply, undo=True
            ),
        }

    def follow_up_committed(self) -> None:
        """A follow-up commit was answered: the inverses edited into the candidate are in
        the pending commit now."""
        for member in self.members.values():
            if member.state is MemberState.ROLLED_BACK_IN_CANDIDATE:
                member.state = MemberState.ROLLED_BACK_IN_COMMIT

    def wait_for_end(self, circuit_id: str, reply: WaitingReply) -> None:
        """A ROLLBACK answered when the batch ends (replacing one sent before)."""
        self.members[circuit_id].rollback = reply

    def confirmed(self) -> None:
        """The confirming commit was answered: the candidate's inverses are in running,
        every undecided member is there for good."""
        for member in self.members.values():
            if member.state in ROLLED_BACK_PENDING:
                member.state = MemberState.REVERTED
            elif member.state is MemberState.UNDECIDED:
                member.state = MemberState.COMMITTED
        self.state = BatchState.CLOSED

    def reverted(self) -> None:
        """The pending commit was cancelled (or refused before it was made): running is
        back to before the batch, which held an ``undo`` member's circuit."""
        for member in self.members.values():
            if member.state in IN_QUESTION:
                member.state = MemberState.COMMITTED if member.undo else MemberState.REVERTED
        self.state = BatchState.CLOSED

    def outcome_unknown(self, settle: Settle) -> None:
        """A step on the pending commit got no answer: settle it ``settle`` before anything
        else happens on the router."""
        self.state = (
            BatchState.SETTLE_CONFIRM if settle is Settle.CONFIRM else BatchState.SETTLE_CANCEL
        )

    def recorded_from(self, running: Mapping[SubinterfaceKey, Leaves]) -> None:
        """The batch has ended on the router (settled, or found not pending): each member
        still in question is what ``running`` holds: there for good when running carries
        what it meant to leave, reverted otherwise."""
        for member in self.members.values():
            if member.state in IN_QUESTION:
                member.state = (
                    MemberState.COMMITTED if member.applied_in(running) else MemberState.REVERTED
                )
        self.state = BatchState.CLOSED

    def answered(self, member: Member) -> None:
        member.rollback = None

    # -- persistence --------------------------------------------------------------------

    def members_json(self) -> dict[str, Any]:
        return {circuit: m.to_json() for circuit, m in self.members.items()}

    @classmethod
    def from_json(
        cls,
        persist_id: str,
        router_name: str,
        state: str,
        expire_at: datetime,
        members: Mapping[str, Mapping[str, Any]],
    ) -> Batch:
        return cls(
            persist_id=persist_id,
            router_name=router_name,
            expire_at=expire_at,
            members={circuit: Member.from_json(m) for circuit, m in members.items()},
            state=BatchState(state),
        )


def settle_left_open(*, confirm_queued: bool, rolled_back_in_candidate: bool) -> Settle:
    """How a batch left open by a previous lease holder is settled (it has the persist id).

    Confirmed when a member's CONFIRM is queued (the saga decided) and no member was rolled
    back into the candidate: that inverse was an edit of the previous holder's session,
    gone with it, so confirming would keep a circuit the saga gave up. Otherwise cancelled:
    the saga decides again on the replies."""
    if confirm_queued and not rolled_back_in_candidate:
        return Settle.CONFIRM
    return Settle.CANCEL
