"""The provisioning service end to end: `python -m services.provisioning` (role all) against
the real broker and routers. Order events are fed with a Kafka producer, outcomes read from
the circuit events topic; every test uses topics of its own (IDC_PROVISIONING_TOPIC_SUFFIX).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from devstack.netconf import RouterFleet
from idc.events.v1 import circuit_pb2, common_pb2, order_pb2, provisioning_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.rendering import Renderer
from services.provisioning.tables import LogEntry
from tests.integration.provisioning.helpers import circuit, subinterfaces, wait_for
from tests.integration.provisioning.stack import PRICE, Stack, approvals_for, launched

pytestmark = pytest.mark.integration

VLANS = itertools.count(3000)


@pytest.fixture(scope="module")
def stack(
    routers: RouterFleet, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with launched(
        kafka_bootstrap,
        tmp_path_factory.mktemp("provisioning"),
        routers,
        IDC_PROVISIONING_CONFIRM_TIMEOUT_S="30",
        IDC_PROVISIONING_STEP_DEADLINE_S="20",
    ) as s:
        yield s


def test_plan_then_create_modify_disconnect(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)), mbps=100)
    stack.send(
        order_pb2.OrderCreated(
            event_id=str(uuid.uuid4()),
            order_id="o-plan",
            operation=Operation.CREATE.value,
            circuit=params,
            price=PRICE,
        ),
        params.circuit_id,
    )
    [plan] = stack.outcome(params.circuit_id, (provisioning_pb2.ProvisioningPlanned,))
    assert isinstance(plan, provisioning_pb2.ProvisioningPlanned)
    assert [p.router_name for p in plan.payloads] == ["sg-edge-1", "cq-edge-1"]
    assert all(len(p.sha256) == 64 for p in plan.payloads) and not plan.error

    stack.approve(Operation.CREATE, params)
    [activated] = stack.outcome(params.circuit_id)
    assert isinstance(activated, circuit_pb2.CircuitActivated), activated
    assert activated.price == PRICE and activated.circuit == params
    assert stack.carries(params) == {"sg-edge-1": True, "cq-edge-1": True}

    bigger = common_pb2.CircuitParameters()
    bigger.CopyFrom(params)
    bigger.bandwidth_mbps = 500
    stack.approve(Operation.MODIFY, bigger, previous=params)
    modified = stack.outcome(params.circuit_id, count=2)[1]
    assert isinstance(modified, circuit_pb2.CircuitModified), modified
    assert (modified.previous_bandwidth_mbps, modified.bandwidth_mbps) == (100, 500)
    sync = stack.stub().CheckSync(pb.CheckSyncRequest(), metadata=stack.metadata())
    assert all(d.in_sync for d in sync.devices if params.circuit_id not in d.extra_circuit_ids)

    stack.approve(Operation.DELETE, bigger)
    disconnected = stack.outcome(params.circuit_id, count=3)[2]
    assert isinstance(disconnected, circuit_pb2.CircuitDisconnected), disconnected
    assert stack.carries(params) == {"sg-edge-1": False, "cq-edge-1": False}


def test_chongqing_refusal_leaves_no_trace(stack: Stack) -> None:
    v = stack.vlan(next(VLANS))
    squatter = circuit(v)
    cq = stack.sessions["cq-edge-1"]
    end = circuit_end(squatter, Side.CHONGQING)
    cq.lock_candidate()
    try:
        cq.edit_candidate(Renderer().render("cq-vendor", Operation.CREATE, end).content)
        cq.commit()
    finally:
        cq.unlock_candidate()
    sg_before = stack.sessions["sg-edge-1"].running()
    params = circuit(v)
    stack.approve(Operation.CREATE, params)
    [failed] = stack.outcome(params.circuit_id)
    assert isinstance(failed, circuit_pb2.ProvisioningFailed), failed
    assert failed.rolled_back
    [failure] = failed.failures
    assert failure.error.router_name == "cq-edge-1"
    assert failure.error.error_tag == "data-exists" and failure.error.message
    assert stack.sessions["sg-edge-1"].running() == sg_before


def test_drift_shows_in_check_sync_and_redeploy_restores(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)), mbps=100)
    stack.approve(Operation.CREATE, params)
    assert isinstance(stack.outcome(params.circuit_id)[0], circuit_pb2.CircuitActivated)
    sg = stack.sessions["sg-edge-1"]
    drifted = circuit(params.a_end.vlan_id, mbps=7, circuit_id=params.circuit_id)
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
    stub = stack.stub()
    [status] = stub.CheckSync(
        pb.CheckSyncRequest(device_names=["sg-edge-1"]), metadata=stack.metadata()
    ).devices
    assert not status.in_sync
    [drift] = [d for d in status.different if d.circuit_id == params.circuit_id]
    assert {(d.intended, d.actual) for d in drift.differences if d.path.endswith("/cir")} == {
        ("100000000", "7000000")
    }
    assert stack.repair(params.circuit_id).saga_id
    modified = stack.outcome(params.circuit_id, (circuit_pb2.CircuitModified,))[0]
    assert isinstance(modified, circuit_pb2.CircuitModified)

    def in_sync() -> bool:
        [s] = stub.CheckSync(
            pb.CheckSyncRequest(device_names=["sg-edge-1"]), metadata=stack.metadata()
        ).devices
        return not [d for d in s.different if d.circuit_id == params.circuit_id]

    assert wait_for("drift repaired", in_sync)
    config = stub.GetCircuitConfig(
        pb.GetCircuitConfigRequest(circuit_id=params.circuit_id), metadata=stack.metadata()
    )
    assert [c.in_sync for c in config.configs] == [True, True]
    assert {e.step for e in config.log} >= {1, 2}
    devices = stub.ListDevices(pb.ListDevicesRequest(), metadata=stack.metadata()).devices
    assert [(d.name, d.reachable) for d in devices] == [("cq-edge-1", True), ("sg-edge-1", True)]


def test_devices_come_in_pages_by_name(stack: Stack) -> None:
    stub = stack.stub()
    first = stub.ListDevices(pb.ListDevicesRequest(page_size=1), metadata=stack.metadata())
    second = stub.ListDevices(pb.ListDevicesRequest(
        page_size=1, page_token=first.next_page_token), metadata=stack.metadata())
    assert [d.name for d in [*first.devices, *second.devices]] == ["cq-edge-1", "sg-edge-1"]
    assert first.next_page_token and second.next_page_token == ""


def test_fifty_circuits_at_once_all_active(stack: Stack) -> None:
    circuits = [circuit(stack.vlan(next(VLANS)), mbps=10 + i) for i in range(50)]
    for params in circuits:
        stack.approve(Operation.CREATE, params)
    for params in circuits:
        [event] = stack.outcome(params.circuit_id)
        assert isinstance(event, circuit_pb2.CircuitActivated), event
    for session in stack.sessions.values():
        present = subinterfaces(session)
        for params in circuits:
            end = circuit_end(params, session.device.side)
            assert (end.interface, end.vlan) in present
    # One confirmed commit at a time per router: a batch is resolved (first confirm or
    # rollback logged) before the next batch's confirmed commit (its prepares logged).
    with stack.database("all")() as db:
        entries = db.scalars(select(LogEntry).where(LogEntry.persist_id != "")).all()
    for router in stack.sessions:
        spans: dict[str, list[Any]] = {}
        for e in entries:
            if e.router_name == router:
                span = spans.setdefault(e.persist_id, [None, None])
                slot = 0 if e.step == 1 else 1
                span[slot] = e.time if span[slot] is None else min(span[slot], e.time)
        ordered = sorted(spans.values(), key=lambda span: span[0])
        assert len(ordered) < 50  # queued circuits were batched
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered)), ordered


def test_payload_changed_since_approval_goes_back_to_approval(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)))
    # The telcos approved the payloads of an earlier rendering (here: another description).
    earlier = common_pb2.CircuitParameters()
    earlier.CopyFrom(params)
    earlier.description = "as first planned"
    stale = approvals_for(Operation.CREATE, earlier)
    before = {name: session.running() for name, session in stack.sessions.items()}
    order_id = stack.approve(Operation.CREATE, params, approvals=stale)
    [plan] = [
        p
        for p in stack.outcome(params.circuit_id, (provisioning_pb2.ProvisioningPlanned,))
        if isinstance(p, provisioning_pb2.ProvisioningPlanned) and p.replan
    ]
    assert (plan.order_id, plan.error) == (order_id, "")
    assert plan.saga_id and "differs from the approved" in plan.reason
    current = {a.side: a.payload_sha256 for a in approvals_for(Operation.CREATE, params)}
    assert {p.side: p.sha256 for p in plan.payloads} == current
    assert not stack.events_for(params.circuit_id)  # no ProvisioningFailed, no activation
    assert {name: s.running() for name, s in stack.sessions.items()} == before
    # Approved again on the new plan, the order goes through.
    stack.approve(Operation.CREATE, params, order_id=order_id)
    [activated] = stack.outcome(params.circuit_id)
    assert isinstance(activated, circuit_pb2.CircuitActivated), activated


def test_an_approval_without_payload_hashes_touches_no_router(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)))
    before = {name: session.running() for name, session in stack.sessions.items()}
    only_sg = approvals_for(Operation.CREATE, params)[:1]
    stack.approve(Operation.CREATE, params, approvals=only_sg)
    [failed] = stack.outcome(params.circuit_id)
    assert isinstance(failed, circuit_pb2.ProvisioningFailed), failed
    assert "not approved for chongqing" in failed.message and failed.rolled_back
    assert {name: s.running() for name, s in stack.sessions.items()} == before
    [entry] = stack.log(params.circuit_id)
    assert (entry.actor, entry.saga_id) == ("system:coordinator", "")


def test_dry_run_shows_each_payload_and_what_it_changes_on_the_router(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)), mbps=100)
    stack.approve(Operation.CREATE, params)
    assert isinstance(stack.outcome(params.circuit_id)[0], circuit_pb2.CircuitActivated)
    stub = stack.stub()
    change = stub.DryRun(
        pb.DryRunRequest(
            circuit_id=params.circuit_id, operation=Operation.MODIFY.value, bandwidth_mbps=200
        ),
        metadata=stack.metadata(),
    )
    assert [r.device_name for r in change.routers] == ["sg-edge-1", "cq-edge-1"]
    assert [r.payload for r in change.routers] == list(change.payloads)
    sg, cq = change.routers
    assert {(d.intended, d.actual) for d in sg.differences if d.path.endswith("/cir")} == {
        ("200000000", "100000000")
    }
    assert all(d.path.endswith(("/cir", "/burst")) for d in sg.differences)
    assert {(d.intended, d.actual) for d in cq.differences if d.path.endswith("cir-kbps")} == {
        ("200000", "100000")
    }
    assert all(d.path.endswith(("/cir", "/burst", "cir-kbps", "cbs-bytes")) for d in cq.differences)
    assert params.circuit_id in sg.running_config and not sg.HasField("error")
    # A disconnect would remove every leaf the circuit has.
    removal = stub.DryRun(
        pb.DryRunRequest(circuit_id=params.circuit_id, operation=Operation.DELETE.value),
        metadata=stack.metadata(),
    )
    for router in removal.routers:
        assert router.differences and all(d.intended == "" and d.actual for d in router.differences)
        assert len(router.differences) == len(router.running_config.splitlines())
