"""Another writer on a real router (the devstack's netconfd), as the whole saga meets it:

* a second ncclient session holding the candidate lock: the PREPARE is refused, the saga
  retries its round while the retry window is open, then fails with "locked by another
  session"; nothing is left on either router, and once the lock is released a new order
  goes through;
* a candidate another session edited without a lock: netconfd then refuses every lock
  (measured: "candidate cannot be locked, discard-changes needed", to the editor too, even
  after its session closed) until someone sends discard-changes. The agent never discards
  without holding the lock, so it cannot take the lock: the saga retries within the window
  and fails saying so, and the other session's edit is still in the candidate, for its
  owner or an operator to commit or discard;
* our own lock lost with a dropped session: the agent's release of the candidate (discard,
  unlock) does nothing on the new session, so an edit another session made meanwhile is
  not discarded.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from ncclient.manager import Manager
from ncclient.operations import RPCError

from devstack.netconf import RouterFleet
from idc.events.v1 import circuit_pb2
from idc.type.v1 import router_error_pb2
from services.provisioning.agent.context import RouterContext
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.domain.faults import RouterFailure
from services.provisioning.domain.observe import running_filter, running_subinterfaces
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from tests.integration.provisioning.helpers import circuit, device_of, wait_for
from tests.integration.provisioning.stack import Stack

pytestmark = pytest.mark.integration

VLANS = itertools.count(3700)
SG = "sg-edge-1"
AGENT_PREPARE, FAILED = 1, 3
RENDERER = Renderer()


@pytest.fixture(scope="module")
def stack(
    own_routers: RouterFleet, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work: Path = tmp_path_factory.mktemp("contention")
    s = Stack(
        kafka_bootstrap,
        work,
        list(own_routers),
        IDC_PROVISIONING_CONFIRM_TIMEOUT_S="20",
        IDC_PROVISIONING_STEP_DEADLINE_S="10",
        IDC_PROVISIONING_RETRY_WINDOW_S="8",  # room for a retry on a loaded machine
        IDC_PROVISIONING_RETRY_BACKOFF_S="1",
    )
    try:
        s.launch({"all": {}})
        yield s
    finally:
        s.close()


def sg_payload(vlan: int) -> str:
    end = circuit_end(circuit(vlan), Side.SINGAPORE)
    return RENDERER.render("openconfig", Operation.CREATE, end).content


def candidate_holds(manager: Manager, vlan: int) -> bool:
    keys = [("xe-0/0/1", vlan)]
    reply = manager.get_config(
        source="candidate", filter=("subtree", running_filter("openconfig", keys))
    )
    return keys[0] in running_subinterfaces("openconfig", str(reply.data_xml))


def failed_after_retrying(s: Stack, circuit_id: str) -> circuit_pb2.ProvisioningFailed:
    [failed] = s.outcome(circuit_id)
    assert isinstance(failed, circuit_pb2.ProvisioningFailed), failed
    assert failed.rolled_back
    log = s.log(circuit_id)
    retried = [e.message for e in log if e.message.startswith("round ")]
    assert retried, (
        "the round should have been run again while the window was open"
    )  # retried while the window was open, then gave up
    refused = [e for e in log if (e.router_name, e.step, e.outcome) == (SG, AGENT_PREPARE, FAILED)]
    assert len(refused) >= 2, "every round's PREPARE should have been refused on Singapore"
    return failed


def sg_failure(failed: circuit_pb2.ProvisioningFailed) -> router_error_pb2.RouterError:
    [failure] = [f for f in failed.failures if f.error.router_name == SG]
    assert failure.error.kind == router_error_pb2.ROUTER_ERROR_KIND_RPC_ERROR
    assert failure.error.retryable
    return failure.error


def test_a_candidate_locked_by_another_session_fails_the_saga_after_its_retries(
    stack: Stack, own_routers: RouterFleet
) -> None:
    s = stack
    params = circuit(next(VLANS))  # never configured: nothing for the cleanup to remove
    holder = own_routers[SG].connect()
    try:
        holder.lock(target="candidate")
        s.approve(Operation.CREATE, params)
        failed = failed_after_retrying(s, params.circuit_id)
        assert s.carries(params) == {SG: False, "cq-edge-1": False}
    finally:
        holder.unlock(target="candidate")
        holder.close_session()
    assert "locked by another session" in failed.message, failed.message
    error = sg_failure(failed)
    assert error.error_tag == "lock-denied"
    assert error.message.startswith("candidate locked by another session: "), error
    # Released: the next order goes through.
    later = circuit(s.vlan(next(VLANS)))
    s.approve(Operation.CREATE, later)
    [activated] = s.outcome(later.circuit_id)
    assert isinstance(activated, circuit_pb2.CircuitActivated), activated


def test_a_candidate_left_edited_without_a_lock_is_not_discarded_and_fails_the_saga(
    stack: Stack, own_routers: RouterFleet
) -> None:
    s = stack
    params = circuit(next(VLANS))
    theirs = next(VLANS)
    editor = own_routers[SG].connect()
    try:
        editor.edit_config(target="candidate", config=sg_payload(theirs))  # no lock
        s.approve(Operation.CREATE, params)
        failed = failed_after_retrying(s, params.circuit_id)
        assert candidate_holds(editor, theirs), "the agent discarded another session's edit"
        assert s.carries(params) == {SG: False, "cq-edge-1": False}
    finally:
        editor.discard_changes()
        editor.close_session()
    assert "uncommitted changes another session made without a lock" in failed.message
    error = sg_failure(failed)
    assert error.error_tag == "resource-denied"
    assert "never discards them without holding the lock" in error.message


def test_a_lost_lock_is_not_released_on_the_new_session(
    stack: Stack, own_routers: RouterFleet
) -> None:
    device = device_of(own_routers[SG])
    ours = NetconfSession(device, timeout_s=10)
    other = own_routers[SG].connect()
    theirs = next(VLANS)
    ctx = RouterContext(device, ours, RENDERER, ledger=None)  # type: ignore[arg-type]
    try:
        ours.lock_candidate()
        ours.edit_candidate(sg_payload(next(VLANS)))
        client_port = int(ours._manager._session._transport.sock.getsockname()[1])  # type: ignore[union-attr]
        assert own_routers.kill_sessions(SG, client_port=client_port) == 1
        # netconfd drops our edits with our lock; another session then edits, lockless.
        wait_for("the lock to go with the session", lambda: _edit_accepted(other, theirs))
        # The next call notices the drop: sent on the dead session, or not sent at all if
        # ncclient saw the close first (both TRANSPORT). Either way the lock is not ours.
        with contextlib.suppress(RouterFailure):
            ours.running()
        assert not ours.holds_lock
        ctx.release()
        assert candidate_holds(other, theirs), "release discarded another session's edit"
    finally:
        other.discard_changes()
        other.close_session()
        ours.close()


def _edit_accepted(manager: Manager, vlan: int) -> bool:
    try:
        manager.edit_config(target="candidate", config=sg_payload(vlan))
    except RPCError:
        return False
    return True
