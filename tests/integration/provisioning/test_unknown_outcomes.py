"""Unknown outcomes settled from the router, never guessed (issue 13, part 2), against the
real devstack routers.

An RPC that gets no answer, or a session that drops before the answer, leaves the agent not
knowing whether the router applied it. The agent must find out from the router (what
running holds, whether a commit with the batch's persist id is pending), cancel by persist
id where the saga did not decide to confirm, and reply and record what the router holds.

How each fault is produced, on this module's own routers (``own_routers``), the worker
driven as in test_agent.py with a 3 s RPC timeout and a 120 s confirm timeout (so that the
router's own revert is never what settles a case):

* PAUSE: the agent's RPC is sent while the router's netconfd is SIGSTOPped
  (``RouterFleet.pause``): no answer within the RPC timeout, the agent drops its session.
  netconfd is resumed (SIGCONT) as soon as the agent gives up on the RPC, or for a CONFIRM
  only after ``HOLD_S``, so that the agent's own reconnects go unanswered too. On resume
  netconfd handles the RPC still queued from the dropped session: the commit lands after
  the agent gave up (a confirmed commit with persist stays pending).
* KILL: the RPC goes through and the router answers; when the answer reaches the agent's
  ncclient session, before the agent sees it, the SSH session is killed from the server's
  side (``kill_session_at_next_reply``): the agent gets "session closed" instead.
* RESTART: the router's netconfd is restarted between PREPARE and CONFIRM
  (``RouterFleet.restart``): it comes back (``--no-startup``) with an empty running
  configuration, no pending commit, and the agent's session ended.

Every check reads the router on a fresh session of the test's own. Whether a commit is
pending is asked with cancel-commit by its persist id (an rpc-error when it is not, see
``pending``); when it is, that cancels it, so a failing case leaves the router unlocked
for the next. An agent that records a timed-out or dropped commit as reverted without
reading the router fails them: the router then holds a circuit the agent says it does not.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.netconf import RouterFleet
from idc.events.v1 import common_pb2, provisioning_pb2
from idc.type.v1 import router_error_pb2
from services.provisioning.agent.jobs import CONFIRM, PREPARE
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.domain.batch import MemberState
from services.provisioning.domain.circuits import Operation, circuit_end
from services.provisioning.domain.faults import FaultKind, RouterFailure
from services.provisioning.domain.lease import LeaseTerms
from services.provisioning.inventory import Device
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from services.provisioning.router import cancel_found_nothing, outcome_unknown
from services.provisioning.tables import AgentBatch
from tests.fixtures.netconf import kill_session_at_next_reply
from tests.integration.provisioning.helpers import (
    circuit,
    command,
    database,
    device_of,
    enqueue,
    remove_vlans,
    replies,
    subinterfaces,
)

if TYPE_CHECKING:
    from ncclient.manager import Manager

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)
T = TypeVar("T")

VLANS = itertools.count(3800)
RPC_TIMEOUT_S = 3.0
CONFIRM_TIMEOUT_S = 120
# A CONFIRM's router stays paused this long: past the RPC timeout and the agent's first
# attempts to reach it again.
HOLD_S = 3 * RPC_TIMEOUT_S
# Bound on the agent settling a case; far below the confirm timeout.
SETTLE_S = 30.0

# Member states of the agent's stored batch in which the router holds the circuit.
HELD = frozenset(
    {
        MemberState.UNDECIDED,
        MemberState.ROLLED_BACK_IN_CANDIDATE,
        MemberState.COMMITTED,
        MemberState.CONFIRMED,
    }
)

Reply = provisioning_pb2.ProvisioningReply


class Fault(enum.Enum):
    PAUSE = "netconfd SIGSTOPped past the RPC timeout, then resumed"
    KILL = "SSH session killed between the router's answer and the agent"


@dataclass
class Shot:
    """One fault, fired at the agent's next RPC named ``rpc``."""

    rpc: str
    fault: Fault
    fired: threading.Event = field(default_factory=threading.Event)
    persist_id: str = ""
    sent_at: float = 0.0  # monotonic
    resumed_at: datetime | None = None  # PAUSE: when netconfd was resumed
    timer: threading.Timer | None = None


@dataclass
class Case:
    """One router's worker, on its own database, and what the test put on the router."""

    fleet: RouterFleet
    worker: RouterWorker
    session: NetconfSession  # the worker's
    vlans: list[int] = field(default_factory=list)
    shots: list[Shot] = field(default_factory=list)

    @property
    def router(self) -> str:
        return self.worker.device.name

    @property
    def device(self) -> Device:
        return self.worker.device

    @property
    def factory(self) -> sessionmaker[Session]:
        return self.worker.session_factory

    def circuit(self) -> common_pb2.CircuitParameters:
        vlan = next(VLANS)
        self.vlans.append(vlan)
        return circuit(vlan)

    def command(
        self, action: int, params: common_pb2.CircuitParameters, persist_id: str = ""
    ) -> provisioning_pb2.ProvisioningCommand:
        cmd = command(
            self.device,
            action,
            params,
            persist_id=persist_id,
            confirm_timeout_s=CONFIRM_TIMEOUT_S,
        )
        enqueue(self.factory, cmd)
        return cmd


@pytest.fixture(
    params=[("sg-edge-1", "sqlite"), ("cq-edge-1", "postgres")], ids=["sg-sqlite", "cq-postgres"]
)
def case(request: pytest.FixtureRequest, own_routers: RouterFleet) -> Iterator[Case]:
    router, engine = request.param
    device = device_of(own_routers[router])
    factory = database(request.getfixturevalue(f"{engine}_database_url"))
    session = NetconfSession(device, timeout_s=RPC_TIMEOUT_S)
    worker = RouterWorker(
        device,
        session,
        factory,
        Renderer(),
        "replies",
        # Driven by run_once without the renewal thread: the lease must outlast the
        # longest step (an RPC timeout and the agent's reconnects).
        lease_terms=LeaseTerms(ttl_s=300),
    )
    c = Case(own_routers, worker, session)
    yield c
    for shot in c.shots:
        if shot.timer is not None:
            shot.timer.cancel()
    own_routers.resume(router)
    session.close()
    with factory() as db:
        stored = db.scalars(select(AgentBatch.persist_id).where(AgentBatch.router_name == router))
        persist_ids = {*stored, *(s.persist_id for s in c.shots)} - {""}
    for persist_id in persist_ids:
        pending(device, persist_id)  # cancels what a case left pending
    cleanup = NetconfSession(device, timeout_s=10)
    try:
        # Only what running holds: a restarted router holds nothing, and removing a
        # sub-interface of an interface it does not have is refused.
        held = {vlan for _, vlan in subinterfaces(cleanup)}
        remove_vlans(cleanup, [v for v in c.vlans if v in held])
    finally:
        cleanup.close()


# -- faults ---------------------------------------------------------------------------------


def inject(
    monkeypatch: pytest.MonkeyPatch, case: Case, rpc: str, fault: Fault, *, hold_s: float = 0.0
) -> Shot:
    """Fire ``fault`` at the agent's next RPC named ``rpc`` (NetconfSession's operation
    names: "confirmed-commit", "confirming-commit"). PAUSE resumes netconfd when the RPC
    gives up, or ``hold_s`` after it was sent."""
    shot = Shot(rpc, fault)
    case.shots.append(shot)
    session = case.session
    original = session.call

    def resume() -> None:
        case.fleet.resume(case.router)
        shot.resumed_at = datetime.now(UTC)

    def call(what: str, operation: Callable[[Manager], T], *, persist_id: str = "") -> T:
        if what != rpc or shot.sent_at:  # one shot: a retry goes through untouched
            return original(what, operation, persist_id=persist_id)
        shot.persist_id, shot.sent_at = persist_id, time.monotonic()
        if fault is Fault.KILL:

            def killing(manager: Manager) -> T:
                # Set on ncclient's thread once the session is killed.
                shot.fired = kill_session_at_next_reply(case.fleet, case.router, manager)
                return operation(manager)

            return original(what, killing, persist_id=persist_id)
        case.fleet.pause(case.router)
        shot.fired.set()
        if hold_s:
            shot.timer = threading.Timer(hold_s, resume)
            shot.timer.start()
            return original(what, operation, persist_id=persist_id)
        try:
            return original(what, operation, persist_id=persist_id)
        finally:
            resume()

    monkeypatch.setattr(session, "call", call)
    return shot


# -- what the router holds, read independently ----------------------------------------------


def router_holds(device: Device, params: common_pb2.CircuitParameters) -> bool:
    """Whether running holds the circuit's sub-interface, read on a fresh session."""
    end = circuit_end(params, device.side)
    session = NetconfSession(device, timeout_s=10)
    try:
        return (end.interface, end.vlan) in subinterfaces(session)
    finally:
        session.close()


def pending(device: Device, persist_id: str) -> bool:
    """Whether a confirmed commit ``persist_id`` is pending on the router, asked on a fresh
    session with cancel-commit (so it is not pending afterwards). netconfd answers an
    rpc-error when nothing is pending under that id (``cancel_found_nothing``)."""
    session = NetconfSession(device, timeout_s=10)
    try:
        session.cancel(persist_id)
    except RouterFailure as exc:
        if cancel_found_nothing(exc.fault):
            return False
        raise
    finally:
        session.close()
    return True


def stored_holds(case: Case, circuit_id: str) -> bool:
    """Whether the agent's stored record of the circuit (its newest batch holding it on
    this router) says the router holds it."""
    with case.factory() as db:
        batches = db.scalars(
            select(AgentBatch)
            .where(AgentBatch.router_name == case.router)
            .order_by(AgentBatch.created_at.desc())
        )
        member = next((b.members[circuit_id] for b in batches if circuit_id in b.members), None)
    return member is not None and member["state"] in HELD


# -- driving the agent ----------------------------------------------------------------------


def reply_to(case: Case, cmd: provisioning_pb2.ProvisioningCommand) -> Reply | None:
    return next((r for r in replies(case.factory) if r.command_event_id == cmd.event_id), None)


def settle(
    case: Case,
    cmd: provisioning_pb2.ProvisioningCommand,
    disagreement: Callable[[Reply], str | None],
    bound: float = SETTLE_S,
) -> Reply:
    """Run the worker until it has answered ``cmd`` and ``disagreement`` (of the reply with
    the router and the stored batch) is None; fail past ``bound`` with the last one."""
    deadline = time.monotonic() + bound
    last = "no reply"
    while True:
        try:
            case.worker.run_once()
        except Exception:  # RouterWorker.run logs it and tries again
            log.exception("run_once of %s failed", case.router)
        reply = reply_to(case, cmd)
        if reply is not None:
            found = disagreement(reply)
            if found is None:
                return reply
            last = found
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled within {bound:.0f} s: {last}")
        time.sleep(0.05)


def agrees(case: Case, params: common_pb2.CircuitParameters) -> Callable[[Reply], str | None]:
    """The reply's success, the agent's stored record and running all say the same of the
    circuit (on the router or not)."""

    def disagreement(reply: Reply) -> str | None:
        held = router_holds(case.device, params)
        stored = stored_holds(case, params.circuit_id)
        if reply.success == stored == held:
            return None
        return (
            f"the agent replied success={reply.success} ({reply.error.message!r}), its "
            f"stored batch says held={stored}, running holds the circuit: {held}"
        )

    return disagreement


def prepared(case: Case, params: common_pb2.CircuitParameters) -> Reply:
    """A PREPARE of ``params`` that succeeds; its confirmed commit is pending."""
    cmd = case.command(PREPARE, params)
    reply = settle(case, cmd, lambda r: None)
    assert reply.success, reply.error
    return reply


# -- the faults themselves -----------------------------------------------------------------


@pytest.mark.parametrize("router", ["sg-edge-1", "cq-edge-1"])
def test_the_faults_do_to_the_router_what_this_module_relies_on(
    own_routers: RouterFleet, router: str
) -> None:
    """Pins the devstack's behaviour under each fault (netconfd 2.13): a commit sent to a
    paused router lands on resume after its client gave up; a killed session ends at once
    for the client; a restarted router is empty with nothing pending."""
    device = device_of(own_routers[router])
    params = circuit(next(VLANS))
    end = circuit_end(params, device.side)
    payload = Renderer().render(device.platform, Operation.CREATE, end).content
    persist_id = f"pin-{params.circuit_id}"
    client = NetconfSession(device, timeout_s=RPC_TIMEOUT_S)
    try:
        client.lock_candidate()
        client.edit_candidate(payload)
        with own_routers.paused(router), pytest.raises(RouterFailure) as unanswered:
            client.confirmed_commit(persist_id, CONFIRM_TIMEOUT_S)
        assert unanswered.value.fault.kind is FaultKind.TIMEOUT
        assert router_holds(device, params)  # landed after the client gave up, pending
        assert pending(device, persist_id)
        assert not pending(device, persist_id)  # the check cancelled it
        assert not router_holds(device, params)

        client.running()
        assert own_routers.kill_sessions(router) == 1
        with pytest.raises(RouterFailure) as dropped:
            client.unlock_candidate()  # a new session: the old one's lock went with it
        if dropped.value.fault.kind is FaultKind.TRANSPORT:
            # Sent before ncclient saw the close (a race on a busy machine): the dead
            # session is dropped by that failure, and the next call opens the new one.
            with pytest.raises(RouterFailure) as dropped:
                client.unlock_candidate()
        assert dropped.value.fault.kind is FaultKind.RPC_ERROR
        client.lock_candidate()
        client.edit_candidate(payload)
        client.confirmed_commit(persist_id, CONFIRM_TIMEOUT_S)
        own_routers.restart(router)
        assert not router_holds(device, params)
        assert not pending(device, persist_id)
    finally:
        client.close()
        own_routers.resume(router)


def test_a_session_opened_to_a_paused_router_fails_as_a_router_failure(
    own_routers: RouterFleet,
) -> None:
    """sshd answers, netconfd never sends its <hello>: a RouterFailure without an answer
    (what the agent's settle expects), not a raw ncclient error."""
    device = device_of(own_routers["sg-edge-1"])
    client = NetconfSession(device, timeout_s=RPC_TIMEOUT_S, connect_timeout_s=RPC_TIMEOUT_S)
    try:
        with own_routers.paused("sg-edge-1"), pytest.raises(RouterFailure) as failed:
            client.running()
        assert outcome_unknown(failed.value.fault)
    finally:
        client.close()


# -- PREPARE: the confirmed commit's outcome unknown ----------------------------------------


@pytest.mark.parametrize("fault", [Fault.PAUSE, Fault.KILL], ids=["sigstop", "session-killed"])
def test_a_prepare_whose_confirmed_commit_went_unanswered_ends_as_the_router_holds(
    case: Case, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    """The confirmed commit lands (after the agent gave up, or with its answer lost). The
    saga decided nothing: the commit of unknown outcome is cancelled by its persist id,
    well before the router's own timeout, and the PREPARE is answered as the router then
    holds the circuit: failed and not there, or prepared again in a batch of its own."""
    params = case.circuit()
    shot = inject(monkeypatch, case, "confirmed-commit", fault)
    cmd = case.command(PREPARE, params)
    reply = settle(case, cmd, agrees(case, params))
    assert shot.fired.is_set(), f"the fault ({fault.value}) was never fired"
    assert time.monotonic() - shot.sent_at < CONFIRM_TIMEOUT_S / 2
    if reply.success:
        assert reply.persist_id != shot.persist_id, "prepared on the commit of unknown outcome"
    assert not pending(case.device, shot.persist_id), (
        f"confirmed commit {shot.persist_id} of unknown outcome is still pending on {case.router}"
    )
    assert router_holds(case.device, params) == reply.success


# -- CONFIRM: the confirming commit's outcome unknown ---------------------------------------


@pytest.mark.parametrize("fault", [Fault.PAUSE, Fault.KILL], ids=["sigstop", "session-killed"])
def test_a_confirm_whose_confirming_commit_went_unanswered_replies_what_the_router_holds(
    case: Case, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    """The agent learns from the router whether the confirming commit landed and replies
    that; while the router cannot tell (paused), it replies nothing."""
    params = case.circuit()
    persist_id = prepared(case, params).persist_id
    shot = inject(
        monkeypatch,
        case,
        "confirming-commit",
        fault,
        hold_s=HOLD_S if fault is Fault.PAUSE else 0.0,
    )
    cmd = case.command(CONFIRM, params, persist_id)
    reply = settle(case, cmd, agrees(case, params))
    assert shot.fired.is_set(), f"the fault ({fault.value}) was never fired"
    if fault is Fault.PAUSE:
        assert shot.resumed_at is not None
        answered = reply.occurred_at.ToDatetime(UTC)
        assert answered >= shot.resumed_at, (
            f"the CONFIRM was answered (success={reply.success}) at {answered}, while the "
            f"router was still paused (resumed at {shot.resumed_at})"
        )
    assert not pending(case.device, persist_id), (
        f"confirmed commit {persist_id} is still pending on {case.router}"
    )


# -- a router restarted mid-batch -----------------------------------------------------------


def test_a_router_restarted_between_prepare_and_confirm_fails_the_confirm(case: Case) -> None:
    """The restarted router holds nothing of the batch (empty running, no pending commit):
    the CONFIRM fails with the router's answer, and the agent records the circuit as not
    on the router."""
    params = case.circuit()
    persist_id = prepared(case, params).persist_id
    assert router_holds(case.device, params)
    case.fleet.restart(case.router)
    assert not router_holds(case.device, params)  # --no-startup: back empty
    cmd = case.command(CONFIRM, params, persist_id)
    reply = settle(case, cmd, agrees(case, params))
    assert not reply.success
    assert_known_reason(reply)
    assert not pending(case.device, persist_id)


def test_steps_after_a_router_restarted_mid_batch_record_what_it_holds(case: Case) -> None:
    """A PREPARE arriving while the agent still counts the restarted router's batch open,
    then the CONFIRM of the batch's first circuit: each reply, and the agent's records,
    say what the restarted router holds."""
    first, joining = case.circuit(), case.circuit()
    persist_id = prepared(case, first).persist_id
    case.fleet.restart(case.router)
    cmd = case.command(PREPARE, joining)
    # When it succeeds, it is pending in a batch of its own (the cleanup cancels it).
    settle(case, cmd, agrees(case, joining))
    cmd = case.command(CONFIRM, first, persist_id)
    confirmed = settle(case, cmd, agrees(case, first))
    assert not confirmed.success
    assert_known_reason(confirmed)
    assert not pending(case.device, persist_id)


def assert_known_reason(reply: Reply) -> None:
    """A failure the router told of: not the agent's own session dropping at the restart."""
    assert reply.error.message, reply.error
    assert reply.error.kind != router_error_pb2.ROUTER_ERROR_KIND_TRANSPORT, reply.error
    assert "no answer" not in reply.error.message, reply.error
