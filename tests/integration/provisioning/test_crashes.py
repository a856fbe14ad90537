"""Processes killed mid-saga (SIGKILL, at crash points no outside kill could hit reliably):
the routers end with both or neither, never one.

The service runs split the way production runs it: the coordinator and each telco's agent
are processes of their own, each with its own database.
"""

from __future__ import annotations

import itertools
import re
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import select

from devstack.netconf import RouterFleet
from devstack.services import health_status
from idc.events.v1 import circuit_pb2
from services.common.events.tables import OutboxRow
from services.provisioning.crashpoints import (
    AGENT_AFTER_CONFIRMED_COMMIT,
    COORDINATOR_AFTER_DECISION,
    ENV,
)
from services.provisioning.domain.batch import UNRESOLVED
from services.provisioning.domain.circuits import Operation
from services.provisioning.domain.faults import RouterFailure
from services.provisioning.domain.saga import Step
from services.provisioning.netconf import NetconfSession
from services.provisioning.tables import AgentBatch, SagaRow
from tests.integration.provisioning.helpers import circuit, device_of, wait_for
from tests.integration.provisioning.stack import Stack, launched

pytestmark = pytest.mark.integration

VLANS = itertools.count(3700)
AGENT_KILLED = f"CKT-agentkill-{uuid.uuid4().hex[:6]}"
COORDINATOR_KILLED = f"CKT-coordkill-{uuid.uuid4().hex[:6]}"
AGENTS_GONE = f"CKT-agentsgone-{uuid.uuid4().hex[:6]}"
CONFIRM_TIMEOUT_S = 4
COORDINATOR = {"IDC_PROVISIONING_ROLE": "coordinator"}
AGENT_SG = {"IDC_PROVISIONING_ROLE": "agent", "IDC_PROVISIONING_TELCO": "sg"}
AGENT_CQ = {"IDC_PROVISIONING_ROLE": "agent", "IDC_PROVISIONING_TELCO": "cq"}
NO_CRASH = {ENV: ""}
WAITING_ALARM = "idc.alarm.saga-waiting"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def stack(
    routers: RouterFleet, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    roles = {
        "coordinator": {
            **COORDINATOR,
            ENV: f"{COORDINATOR_AFTER_DECISION}:{COORDINATOR_KILLED}",
        },
        "agent-sg": AGENT_SG,
        "agent-cq": {**AGENT_CQ, ENV: f"{AGENT_AFTER_CONFIRMED_COMMIT}:{AGENT_KILLED}"},
    }
    with launched(
        kafka_bootstrap,
        tmp_path_factory.mktemp("crashes"),
        routers,
        roles,
        IDC_PROVISIONING_CONFIRM_TIMEOUT_S=str(CONFIRM_TIMEOUT_S),
        IDC_PROVISIONING_STEP_DEADLINE_S="3",
        IDC_PROVISIONING_RETRY_WINDOW_S="60",
        IDC_PROVISIONING_RETRY_BACKOFF_S="1",
    ) as s:
        yield s


def killed(stack: Stack, name: str) -> None:
    process = stack.processes[name]
    wait_for(f"{name} to be killed", lambda: process.proc.poll() is not None)
    assert process.proc.returncode == -signal.SIGKILL


def test_agent_killed_before_the_confirm_never_leaves_one_side_confirmed(
    stack: Stack,
) -> None:
    params = circuit(stack.vlan(next(VLANS)), circuit_id=AGENT_KILLED)
    stack.approve(Operation.CREATE, params)
    killed(stack, "agent-cq")
    # Chongqing holds an unconfirmed commit nobody can answer for (until its timeout).
    assert stack.carries(params)["cq-edge-1"]
    # No answer from Chongqing: the coordinator rolls back, never confirms Singapore.
    wait_for(
        "Singapore to be rolled back",
        lambda: (
            saga_step(stack, params.circuit_id) == Step.ROLLING_BACK.value
            and not stack.carries(params)["sg-edge-1"]
        ),
    )
    # The agent's restart cancels the commit it left open, answers the rollback, and the
    # coordinator runs the round again.
    stack.launch({"agent-cq": {**AGENT_CQ, **NO_CRASH}})
    [outcome] = stack.outcome(params.circuit_id)
    assert isinstance(outcome, circuit_pb2.CircuitActivated), outcome
    assert stack.carries(params) == {"sg-edge-1": True, "cq-edge-1": True}
    rounds = [e.message for e in stack.log(params.circuit_id) if e.message.startswith("round ")]
    # On a busy machine Singapore's answer may be late too ("from singapore, chongqing").
    silent = re.search(r"no answer in time from ([a-z, ]+)\)", rounds[0]) if rounds else None
    assert silent and "chongqing" in silent.group(1).split(", "), rounds


def saga_step(stack: Stack, circuit_id: str) -> str:
    with stack.database("coordinator")() as db:
        return db.scalars(select(SagaRow.step).where(SagaRow.circuit_id == circuit_id)).one()


def open_batches(stack: Stack, agent: str) -> int:
    with stack.database(agent)() as db:
        return len(
            db.scalars(select(AgentBatch).where(AgentBatch.state.in_(UNRESOLVED))).all()
        )


def test_coordinator_killed_after_the_decision_rolls_forward(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)), circuit_id=COORDINATOR_KILLED)
    stack.approve(Operation.CREATE, params)
    killed(stack, "coordinator")
    # The decision to confirm is durable: it was recorded with both CONFIRMs queued.
    assert saga_step(stack, params.circuit_id) == Step.CONFIRMING.value
    # Whether or not the relay sent the CONFIRMs before the kill, the agents end their
    # batches (confirmed, or cancelled before the router's timeout): the coordinator comes
    # back to routers that hold the circuit confirmed or not at all.
    wait_for(
        "both agents to end their batches",
        lambda: open_batches(stack, "agent-sg") == open_batches(stack, "agent-cq") == 0,
        timeout=CONFIRM_TIMEOUT_S + 30,
    )
    stack.launch({"coordinator": {**COORDINATOR, **NO_CRASH}})
    [activated] = stack.outcome(params.circuit_id)
    assert isinstance(activated, circuit_pb2.CircuitActivated), activated
    assert stack.carries(params) == {"sg-edge-1": True, "cq-edge-1": True}
    recovered = [e.message for e in stack.log(params.circuit_id)
                 if e.message.startswith("recovered at start")]
    assert recovered and "in step confirming" in recovered[0], recovered
    with stack.database("coordinator")() as db:
        published = db.scalars(
            select(OutboxRow.event_type).where(OutboxRow.key == params.circuit_id.encode())
        ).all()
    assert published.count("idc.events.v1.CircuitActivated") == 1


def lock_once_no_commit_is_pending(session: NetconfSession, timeout: float) -> None:
    """Take the candidate lock as soon as the router grants it (it refuses every session
    while a commit is pending). Tried every 1.5 s: netconfd reverts a commit at its timeout
    only after a second with no input on any session (measured), so faster tries would
    hold the revert off."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            session.lock_candidate()
            return
        except RouterFailure:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.5)


def test_every_agent_of_a_telco_gone_the_watchdog_ends_the_saga_from_the_routers(
    stack: Stack,
) -> None:
    # Last in the module: a coordinator that does not retry a failed round (the saga ends
    # at its first) and with a step deadline long enough for the test to act before the
    # watchdog does; Chongqing's only agent dies right after its confirmed commit.
    for name in ("coordinator", "agent-cq"):
        stack.processes[name].terminate()
    step_deadline_s = 6
    stack.launch(
        {
            "coordinator": {
                **COORDINATOR,
                **NO_CRASH,
                "IDC_PROVISIONING_RETRY_WINDOW_S": "0",
                "IDC_PROVISIONING_STEP_DEADLINE_S": str(step_deadline_s),
            },
            "agent-cq": {**AGENT_CQ, ENV: f"{AGENT_AFTER_CONFIRMED_COMMIT}:{AGENTS_GONE}"},
        }
    )
    params = circuit(stack.vlan(next(VLANS)), circuit_id=AGENTS_GONE)
    stack.approve(Operation.CREATE, params)
    killed(stack, "agent-cq")
    coordinator = stack.processes["coordinator"]
    # Another session takes Chongqing's candidate lock once the dead agent's commit has
    # reverted at its timeout, so the watchdog cannot know yet that nothing is pending:
    # it must raise the alarm and wait, not guess.
    [router] = [r for r in stack.routers if r.name == "cq-edge-1"]
    holder = NetconfSession(device_of(router))
    try:
        lock_once_no_commit_is_pending(holder, timeout=CONFIRM_TIMEOUT_S + 30)
        wait_for(
            "the saga-waiting alarm",
            lambda: health_status(coordinator.address, WAITING_ALARM) == NOT_SERVING,
            timeout=CONFIRM_TIMEOUT_S + step_deadline_s * 2 + 60,
        )
        assert saga_step(stack, params.circuit_id) == Step.ROLLING_BACK.value
    finally:
        holder.unlock_candidate()
        holder.close()
    # Lock granted to the watchdog: running is final; the rollback is settled from it.
    [failed] = stack.outcome(params.circuit_id, timeout=60)
    assert isinstance(failed, circuit_pb2.ProvisioningFailed), failed
    assert failed.rolled_back and "no answer in time from chongqing" in failed.message, failed
    assert stack.carries(params) == {"sg-edge-1": False, "cq-edge-1": False}
    settled = [e.message for e in stack.log(params.circuit_id) if "agent silent" in e.message]
    assert settled and "holds the previous state" in settled[0], settled
    wait_for(
        "the alarm to clear",
        lambda: health_status(coordinator.address, WAITING_ALARM) == SERVING,
        timeout=30,
    )
    # An agent back: the next order on that router succeeds.
    stack.launch({"agent-cq": {**AGENT_CQ, **NO_CRASH}})
    later = circuit(stack.vlan(next(VLANS)), circuit_id=f"CKT-after-{uuid.uuid4().hex[:6]}")
    stack.approve(Operation.CREATE, later)
    [activated] = stack.outcome(later.circuit_id, timeout=90)
    assert isinstance(activated, circuit_pb2.CircuitActivated), activated
    assert stack.carries(later) == {"sg-edge-1": True, "cq-edge-1": True}
