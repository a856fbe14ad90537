"""Sandbox circuits (README "Sandbox") are rendered for sandbox routers only, and real
circuits never for a sandbox router: a plan that would cross is refused before any ops
approve a payload, so nothing reaches the wrong router."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import common_pb2
from idc.type.v1 import side_pb2
from services.common.errors import DomainError
from services.provisioning.agent.jobs import PREPARE
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.coordinator import Coordinator, SagaTimings, Topics
from services.provisioning.domain.circuits import Operation, Side
from services.provisioning.inventory import Device, Inventory
from services.provisioning.rendering import Renderer
from tests.integration.provisioning.helpers import circuit, command, enqueue, replies
from tests.unit.provisioning.fake_router import FakeRouter
from tests.unit.provisioning.test_agent_faults import DEVICE


def device(name: str, telco: str, platform: str, *, sandbox: bool = False) -> Device:
    return Device(name=name, telco=telco, site=f"{telco}-site", vendor=platform,
                  platform=platform, host="127.0.0.1", port=830, username="u",
                  key_path=Path("/k"), known_hosts_path=Path("/h"), sandbox=sandbox)


COORDINATOR = Coordinator(
    Inventory([device("sg-edge-1", "sg", "openconfig"), device("cq-edge-1", "cq", "cq-vendor"),
               device("sg-sandbox-edge", "sg", "openconfig", sandbox=True),
               device("cq-sandbox-edge", "cq", "cq-vendor", sandbox=True)]),
    Renderer(), Topics("o", {Side.SINGAPORE: "s", Side.CHONGQING: "c"}, "r", "e"),
    SagaTimings(), lambda _device: "")


def parameters(sg_router: str, cq_router: str, *, sandbox: bool) -> common_pb2.CircuitParameters:
    def end(side: side_pb2.Side.ValueType, telco: str, router: str, interface: str
            ) -> common_pb2.CircuitEndpoint:
        return common_pb2.CircuitEndpoint(side=side, telco_id=telco, router_name=router,
                                          interface_name=interface, vlan_id=100)

    return common_pb2.CircuitParameters(
        circuit_id="cct-1", tenant_id="t", bandwidth_mbps=100, description="IDC t",
        a_end=end(side_pb2.SIDE_SINGAPORE, "sg", sg_router, "xe-0/0/1"),
        z_end=end(side_pb2.SIDE_CHONGQING, "cq", cq_router, "XGE0/0/1"), sandbox=sandbox)


def test_a_sandbox_circuit_renders_for_the_sandbox_routers() -> None:
    payloads = COORDINATOR.payloads(
        Operation.CREATE, parameters("sg-sandbox-edge", "cq-sandbox-edge", sandbox=True))
    assert [p.router_name for p in payloads] == ["sg-sandbox-edge", "cq-sandbox-edge"]


@pytest.mark.parametrize(("sg", "cq", "sandbox", "says"), [
    ("sg-edge-1", "cq-sandbox-edge", True, "router sg-edge-1 is not a sandbox router"),
    ("sg-sandbox-edge", "cq-edge-1", True, "router cq-edge-1 is not a sandbox router"),
    ("sg-sandbox-edge", "cq-sandbox-edge", False, "router sg-sandbox-edge is a sandbox router"),
])
def test_a_circuit_never_renders_for_a_router_of_the_other_kind(
        sg: str, cq: str, sandbox: bool, says: str) -> None:
    with pytest.raises(DomainError, match=says):
        COORDINATOR.payloads(Operation.CREATE, parameters(sg, cq, sandbox=sandbox))


@pytest.mark.parametrize("device_is_sandbox", [True, False])
def test_an_agent_never_configures_a_circuit_of_the_other_kind(
        factory: sessionmaker[Session], device_is_sandbox: bool) -> None:
    # The coordinator's check above comes first; the agent holds the line on its own too.
    device = replace(DEVICE, sandbox=device_is_sandbox)
    router = FakeRouter("openconfig", name=device.name)
    worker = RouterWorker(device, router.session(), factory, Renderer(), "replies")
    params = circuit(100, circuit_id="CKT-1")
    params.sandbox = not device_is_sandbox
    enqueue(factory, command(device, PREPARE, params))
    for _ in range(20):
        worker.run_once()
        if replies(factory):
            break
    [reply] = replies(factory)
    assert not reply.success and "router untouched" in reply.error.message
    assert router.subinterfaces() == {} and router.pending is None
