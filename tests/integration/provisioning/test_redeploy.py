"""Redeploy puts the intended configuration back whatever each router holds now: the
circuit's sub-interface deleted behind the system's back is created again, a drifted one
is replaced, on both routers in one saga."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from devstack.netconf import RouterFleet
from idc.events.v1 import circuit_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from idc.type.v1 import circuit_operation_pb2
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.rendering import Renderer
from tests.integration.provisioning.helpers import circuit, remove_vlans, wait_for
from tests.integration.provisioning.stack import Stack, launched

pytestmark = pytest.mark.integration

VLANS = itertools.count(3700)
CREATE = circuit_operation_pb2.CIRCUIT_OPERATION_CREATE
MODIFY = circuit_operation_pb2.CIRCUIT_OPERATION_MODIFY


@pytest.fixture(scope="module")
def stack(
    routers: RouterFleet, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with launched(
        kafka_bootstrap,
        tmp_path_factory.mktemp("redeploy"),
        routers,
        IDC_PROVISIONING_CONFIRM_TIMEOUT_S="30",
        IDC_PROVISIONING_STEP_DEADLINE_S="20",
    ) as s:
        yield s


def _sync(stack: Stack) -> dict[str, pb.DeviceSyncStatus]:
    response = stack.stub().CheckSync(pb.CheckSyncRequest(), metadata=stack.metadata())
    return {d.device_name: d for d in response.devices}


def _redeploy(stack: Stack, circuit_id: str, dry_run: bool = False) -> pb.RedeployResponse:
    return stack.stub().Redeploy(  # type: ignore[no-any-return]
        pb.RedeployRequest(circuit_id=circuit_id, dry_run=dry_run), metadata=stack.metadata()
    )


def test_redeploy_recreates_a_circuit_deleted_on_both_routers(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)), mbps=200)
    stack.approve(Operation.CREATE, params)
    assert isinstance(stack.outcome(params.circuit_id)[0], circuit_pb2.CircuitActivated)
    for name in ("sg-edge-1", "cq-edge-1"):
        remove_vlans(stack.sessions[name], [params.a_end.vlan_id])
    assert stack.carries(params) == {"sg-edge-1": False, "cq-edge-1": False}
    sync = _sync(stack)
    for name in ("sg-edge-1", "cq-edge-1"):
        assert params.circuit_id in sync[name].missing_circuit_ids, name
        assert not sync[name].in_sync

    preview = _redeploy(stack, params.circuit_id, dry_run=True)
    assert [(p.router_name, p.operation) for p in preview.payloads] == [
        ("sg-edge-1", CREATE),
        ("cq-edge-1", CREATE),
    ]
    assert not preview.saga_id and stack.carries(params) == {
        "sg-edge-1": False,
        "cq-edge-1": False,
    }, "a dry run changes nothing"

    assert _redeploy(stack, params.circuit_id).saga_id
    outcome = stack.outcome(params.circuit_id, (circuit_pb2.CircuitModified,))[0]
    assert isinstance(outcome, circuit_pb2.CircuitModified)
    assert outcome.bandwidth_mbps == 200
    assert stack.carries(params) == {"sg-edge-1": True, "cq-edge-1": True}
    sync = _sync(stack)
    for name in ("sg-edge-1", "cq-edge-1"):
        assert params.circuit_id not in sync[name].missing_circuit_ids, name
        assert params.circuit_id not in [d.circuit_id for d in sync[name].different], name
    config = stack.stub().GetCircuitConfig(
        pb.GetCircuitConfigRequest(circuit_id=params.circuit_id), metadata=stack.metadata()
    )
    assert [c.in_sync for c in config.configs] == [True, True]


def test_redeploy_replaces_one_router_and_recreates_on_the_other(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)), mbps=300)
    stack.approve(Operation.CREATE, params)
    assert isinstance(stack.outcome(params.circuit_id)[0], circuit_pb2.CircuitActivated)
    remove_vlans(stack.sessions["cq-edge-1"], [params.z_end.vlan_id])
    sg = stack.sessions["sg-edge-1"]
    drifted = circuit(params.a_end.vlan_id, mbps=9, circuit_id=params.circuit_id)
    sg.lock_candidate()
    try:
        sg.edit_candidate(
            Renderer()
            .render("openconfig", Operation.MODIFY, circuit_end(drifted, Side.SINGAPORE))
            .content
        )
        sg.commit()
    finally:
        sg.unlock_candidate()

    response = _redeploy(stack, params.circuit_id)
    assert [(p.router_name, p.operation) for p in response.payloads] == [
        ("sg-edge-1", MODIFY),
        ("cq-edge-1", CREATE),
    ]
    stack.outcome(params.circuit_id, (circuit_pb2.CircuitModified,))

    def repaired() -> bool:
        sync = _sync(stack)
        return all(
            params.circuit_id not in s.missing_circuit_ids
            and params.circuit_id not in [d.circuit_id for d in s.different]
            for s in sync.values()
        )

    assert wait_for("both routers back to the intended configuration", repaired)
