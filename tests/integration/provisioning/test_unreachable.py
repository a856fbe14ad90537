"""A router that cannot be reached during prepare: the other router is rolled back, nothing
is left behind, and the coordinator retries the round (backing off) until its retry window
closes; a router that comes back within the window gets the circuit on the next round.

The Chongqing router here is a fleet of its own (its own sshd, which the tests stop and
start); the Singapore router is the session's shared one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.netconf import RouterFleet, RouterSpec, start_routers
from devstack.process import spawn, stop, wait_for_port
from idc.events.v1 import circuit_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from idc.type.v1 import router_error_pb2
from services.provisioning.domain.circuits import Operation
from tests.integration.provisioning.helpers import circuit, wait_for
from tests.integration.provisioning.stack import Stack

pytestmark = pytest.mark.integration

VLANS = itertools.count(3600)
AGENT_PREPARE, AGENT_ROLLBACK = 1, 3
SUCCEEDED, FAILED = 2, 3


class Sshd:
    """The sshd in front of a fleet, stopped and started by the test (it is the only way
    to the router: stopping it also ends the sessions it carries)."""

    def __init__(self, fleet: RouterFleet) -> None:
        self.workdir = fleet.workdir
        self.port = fleet.routers[0].port
        self._own: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self._own is not None:
            stop(self._own)
            self._own = None
            return
        # The fleet's own sshd: its whole process group (listener and connections).
        pid = int((self.workdir / "sshd.pid").read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        wait_for("sshd to stop", lambda: not _listening(self.port))

    def start(self) -> None:
        if self._own is None:
            self._own = spawn(
                [
                    "/usr/sbin/sshd",
                    "-D",
                    "-f",
                    str(self.workdir / "sshd_config"),
                    "-E",
                    str(self.workdir / "sshd.log"),
                ],
                cwd=self.workdir,
                log_path=self.workdir / "sshd.restart.log",
            )
        wait_for_port("127.0.0.1", self.port, 10, name="sshd", proc=self._own)

    def close(self) -> None:
        if self._own is not None:
            stop(self._own)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(
    routers: RouterFleet, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Sshd]]:
    work: Path = tmp_path_factory.mktemp("unreachable")
    with start_routers([RouterSpec("cq-edge-1", "cq-vendor", "cq")], work / "cq-fleet") as cq_fleet:
        sshd = Sshd(cq_fleet)
        s = Stack(
            kafka_bootstrap,
            work,
            [routers["sg-edge-1"], cq_fleet["cq-edge-1"]],
            IDC_PROVISIONING_CONFIRM_TIMEOUT_S="20",
            IDC_PROVISIONING_STEP_DEADLINE_S="10",
            IDC_PROVISIONING_RETRY_WINDOW_S="4",
            IDC_PROVISIONING_RETRY_BACKOFF_S="1",
        )
        try:
            s.launch({"all": {}})
            yield s, sshd
        finally:
            sshd.start()  # the cleanup of the stack removes its VLANs from both routers
            s.close()
            sshd.close()


def test_unreachable_router_fails_the_order_with_nothing_left_behind(
    stack: tuple[Stack, Sshd],
) -> None:
    s, sshd = stack
    params = circuit(s.vlan(next(VLANS)))
    sg_before = s.sessions["sg-edge-1"].running()
    sshd.stop()
    try:
        devices = s.stub().ListDevices(pb.ListDevicesRequest(), metadata=s.metadata()).devices
        assert {d.name: d.reachable for d in devices} == {"sg-edge-1": True, "cq-edge-1": False}
        s.approve(Operation.CREATE, params)
        [failed] = s.outcome(params.circuit_id)
    finally:
        sshd.start()
    assert isinstance(failed, circuit_pb2.ProvisioningFailed), failed
    assert failed.rolled_back
    [failure] = failed.failures
    assert failure.error.router_name == "cq-edge-1"
    assert failure.error.kind == router_error_pb2.ROUTER_ERROR_KIND_TRANSPORT
    assert failure.error.retryable and failure.rolled_back
    # Singapore was prepared and rolled back in every round; its running is as before.
    assert s.sessions["sg-edge-1"].running() == sg_before
    assert s.carries(params) == {"sg-edge-1": False, "cq-edge-1": False}
    log = s.log(params.circuit_id)
    sg_steps = {(e.step, e.outcome) for e in log if e.router_name == "sg-edge-1"}
    assert {(AGENT_PREPARE, SUCCEEDED), (AGENT_ROLLBACK, SUCCEEDED)} <= sg_steps
    rounds = [e.message for e in log if e.message.startswith("round ")]
    assert len(rounds) >= 2, rounds  # retried while the window was open, then gave up


def test_a_later_round_succeeds_once_the_router_is_back(stack: tuple[Stack, Sshd]) -> None:
    s, sshd = stack
    params = circuit(s.vlan(next(VLANS)))
    sshd.stop()
    try:
        s.approve(Operation.CREATE, params)
        wait_for(
            "the first round to fail",
            lambda: [e for e in s.log(params.circuit_id) if e.message.startswith("round 1 ")],
        )
    finally:
        sshd.start()
    [activated] = s.outcome(params.circuit_id)
    assert isinstance(activated, circuit_pb2.CircuitActivated), activated
    assert s.carries(params) == {"sg-edge-1": True, "cq-edge-1": True}
    failed_prepares = [
        e
        for e in s.log(params.circuit_id)
        if (e.router_name, e.step, e.outcome) == ("cq-edge-1", AGENT_PREPARE, FAILED)
    ]
    assert failed_prepares, "the first round should have failed on Chongqing"
    error = router_error_pb2.RouterError()
    error.ParseFromString(failed_prepares[0].error)
    assert error.kind == router_error_pb2.ROUTER_ERROR_KIND_TRANSPORT
