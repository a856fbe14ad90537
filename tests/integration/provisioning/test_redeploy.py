"""Redeploy puts the intended configuration back whatever each router holds now: the
circuit's sub-interface deleted behind the system's back is created again, a drifted one
is replaced, on both routers in one saga; and only once each telco's ops approved its own
router's payload (four eyes: never the requester), bound to the payload's hash."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import grpc
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
SG_SIDE, CQ_SIDE = Side.SINGAPORE.value, Side.CHONGQING.value


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


# Three operators: the stack's own (ops-sg-1) requests; a colleague approves Singapore.
SG_COLLEAGUE = ("ops-sg-2", "sg")
CQ_OPS = ("ops-cq-1", "cq")


def _redeploy(stack: Stack, circuit_id: str, dry_run: bool = False) -> pb.RedeployResponse:
    """A repair requested by ops-sg-1 (nothing runs yet), or with dry_run a preview."""
    return stack.stub().Redeploy(  # type: ignore[no-any-return]
        pb.RedeployRequest(circuit_id=circuit_id, dry_run=dry_run), metadata=stack.metadata()
    )


def _approve(stack: Stack, repair: pb.Repair, who: tuple[str, str], sha256: str = "") -> pb.Repair:
    """``who`` approves their telco's router payload of ``repair`` (or the hash given)."""
    own = next(p for p in repair.payloads if p.telco_id == who[1])
    response = stack.stub().ApproveRepair(
        pb.ApproveRepairRequest(repair_id=repair.repair_id, payload_sha256=sha256 or own.sha256),
        metadata=stack.metadata(*who),
    )
    return response.repair  # type: ignore[no-any-return]


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


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

    stack.repair(params.circuit_id)
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

    response = stack.repair(params.circuit_id)
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


def _activated_then_removed(stack: Stack, mbps: int) -> circuit_pb2.CircuitActivated:
    """An active circuit whose sub-interface was then deleted on both routers."""
    params = circuit(stack.vlan(next(VLANS)), mbps=mbps)
    stack.approve(Operation.CREATE, params)
    activated = stack.outcome(params.circuit_id)[0]
    assert isinstance(activated, circuit_pb2.CircuitActivated)
    for name in ("sg-edge-1", "cq-edge-1"):
        remove_vlans(stack.sessions[name], [params.a_end.vlan_id])
    return activated


def test_a_repair_runs_only_once_each_telco_approved_its_own_router(stack: Stack) -> None:
    activated = _activated_then_removed(stack, 150)
    params = activated.circuit
    log_before = len(stack.log(params.circuit_id))
    requested = _redeploy(stack, params.circuit_id)
    repair = requested.repair
    assert repair.state == pb.REPAIR_STATE_PENDING_APPROVAL and not requested.saga_id
    assert [p.sha256 for p in repair.payloads] == [p.sha256 for p in requested.payloads]
    sg_sha, cq_sha = (p.sha256 for p in repair.payloads)

    # A Singapore operator cannot approve the Chongqing router's payload.
    error = _refused(lambda: _approve(stack, repair, SG_COLLEAGUE, sha256=cq_sha))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    # The requester cannot approve their own repair (not even their own router).
    error = _refused(lambda: _approve(stack, repair, ("ops-sg-1", "sg")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert "four eyes" in (error.details() or "")
    # A hash other than the planned one is refused.
    error = _refused(lambda: _approve(stack, repair, CQ_OPS, sha256="0" * 64))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()

    after_one = _approve(stack, repair, CQ_OPS)
    assert after_one.state == pb.REPAIR_STATE_PENDING_APPROVAL and not after_one.saga_id
    pending = stack.stub().ListRepairs(
        pb.ListRepairsRequest(circuit_id=params.circuit_id, pending_only=True),
        metadata=stack.metadata(*CQ_OPS),
    )
    assert [r.repair_id for r in pending.repairs] == [repair.repair_id]
    # Without every approval nothing was sent: both routers still lack the circuit.
    assert stack.carries(params) == {"sg-edge-1": False, "cq-edge-1": False}
    assert len(stack.log(params.circuit_id)) == log_before

    started = _approve(stack, repair, SG_COLLEAGUE)
    assert started.state == pb.REPAIR_STATE_STARTED and started.saga_id
    stack.outcome(params.circuit_id, (circuit_pb2.CircuitModified,))
    assert stack.carries(params) == {"sg-edge-1": True, "cq-edge-1": True}
    config = stack.stub().GetCircuitConfig(
        pb.GetCircuitConfigRequest(circuit_id=params.circuit_id), metadata=stack.metadata()
    )
    assert [c.in_sync for c in config.configs] == [True, True]

    # Every decision is an entry of its own, naming the principal by its opaque id.
    kinds = [(d.kind, d.side, d.payload_sha256) for d in started.decisions]
    assert kinds == [
        (pb.REPAIR_DECISION_KIND_REQUESTED, 0, ""),
        (pb.REPAIR_DECISION_KIND_APPROVED, CQ_SIDE, cq_sha),
        (pb.REPAIR_DECISION_KIND_APPROVED, SG_SIDE, sg_sha),
        (pb.REPAIR_DECISION_KIND_STARTED, 0, ""),
    ]
    requester, cq_approver, sg_approver = (d.actor for d in started.decisions[:3])
    assert started.requested_by == requester
    assert len({requester, cq_approver, sg_approver}) == 3
    assert not any("@" in a or a.startswith("ops-") for a in (requester, cq_approver, sg_approver))
    # The repair saga's log entries name its approvers, Singapore first.
    entries = [e for e in config.log if e.saga_id == started.saga_id]
    assert entries and {e.actor for e in entries} == {f"{sg_approver},{cq_approver}"}
    stored = [e for e in stack.log(params.circuit_id) if e.saga_id == started.saga_id]
    assert {e.actor for e in stored} == {f"{sg_approver},{cq_approver}"}
    assert {e.router_name for e in stored} >= {"sg-edge-1", "cq-edge-1"}


def test_a_router_changed_after_an_approval_supersedes_the_repair(stack: Stack) -> None:
    params = _activated_then_removed(stack, 120).circuit
    repair = _redeploy(stack, params.circuit_id).repair
    assert [p.operation for p in repair.payloads] == [CREATE, CREATE]
    _approve(stack, repair, CQ_OPS)
    # Singapore's sub-interface comes back behind the system's back: its repair payload
    # would now be a MODIFY, not the planned CREATE.
    sg = stack.sessions["sg-edge-1"]
    sg.lock_candidate()
    try:
        sg.edit_candidate(
            Renderer()
            .render("openconfig", Operation.CREATE, circuit_end(params, Side.SINGAPORE))
            .content
        )
        sg.commit()
    finally:
        sg.unlock_candidate()
    error = _refused(lambda: _approve(stack, repair, SG_COLLEAGUE))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "superseded" in (error.details() or "")
    listed = stack.stub().ListRepairs(
        pb.ListRepairsRequest(circuit_id=params.circuit_id), metadata=stack.metadata()
    )
    (superseded,) = listed.repairs
    assert superseded.state == pb.REPAIR_STATE_SUPERSEDED and not superseded.saga_id
    assert superseded.decisions[-1].kind == pb.REPAIR_DECISION_KIND_SUPERSEDED
    assert stack.carries(params) == {"sg-edge-1": True, "cq-edge-1": False}, "nothing was sent"
    # A superseded repair takes no further decision.
    error = _refused(lambda: _approve(stack, repair, SG_COLLEAGUE))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_rejected_repair_never_runs(stack: Stack) -> None:
    params = _activated_then_removed(stack, 110).circuit
    repair = _redeploy(stack, params.circuit_id).repair
    rejected = (
        stack.stub()
        .RejectRepair(
            pb.RejectRepairRequest(repair_id=repair.repair_id, reason="not in the change window"),
            metadata=stack.metadata(*CQ_OPS),
        )
        .repair
    )
    assert rejected.state == pb.REPAIR_STATE_REJECTED
    assert rejected.decisions[-1].comment == "not in the change window"
    error = _refused(lambda: _approve(stack, repair, SG_COLLEAGUE))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stack.carries(params) == {"sg-edge-1": False, "cq-edge-1": False}
