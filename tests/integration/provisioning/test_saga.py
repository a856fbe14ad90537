"""The provisioning service end to end: `python -m services.provisioning` (role all) against
the real broker and routers. Order events are fed with a Kafka producer, outcomes read from
the circuit events topic; every test uses topics of its own (IDC_PROVISIONING_TOPIC_SUFFIX).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import select

from idc.events.v1 import circuit_pb2, common_pb2, order_pb2, provisioning_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from idc.provisioning.v1 import provisioning_service_pb2_grpc as pb_grpc
from idc.type.v1 import money_pb2
from services.common.auth import Principal, Role, SqlTokenStore
from services.common.db import make_engine, make_session_factory
from services.common.devstack.netconf import RouterFleet
from services.common.devstack.process import free_port
from services.common.devstack.services import ServiceProcess, start_service, wait_serving
from services.common.events import EventRegistry, decode_record, encode_event
from services.provisioning.circuits import Operation, Side, circuit_end
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from services.provisioning.tables import LogEntry
from tests.integration.provisioning.helpers import (
    circuit,
    device_of,
    remove_vlans,
    subinterfaces,
    wait_for,
)

pytestmark = pytest.mark.integration

VLANS = itertools.count(3000)
CIRCUIT_EVENTS = (
    circuit_pb2.CircuitActivated,
    circuit_pb2.CircuitModified,
    circuit_pb2.CircuitDisconnected,
    circuit_pb2.ProvisioningFailed,
    provisioning_pb2.ProvisioningPlanned,
)
REGISTRY = EventRegistry(CIRCUIT_EVENTS)
PRICE = common_pb2.PriceTerms(
    currency_code="SGD",
    mrc=money_pb2.Money(currency_code="SGD", amount="1250.00"),
    term_months=12,
)


class Stack:
    def __init__(
        self,
        service: ServiceProcess,
        bootstrap: str,
        suffix: str,
        db_url: str,
        routers: RouterFleet,
    ) -> None:
        self.service = service
        self.db_url = db_url
        self.suffix = suffix
        self.producer = KafkaProducer(bootstrap_servers=bootstrap)
        self.consumer = KafkaConsumer(
            "idc.circuit.events" + suffix,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.events: list[Message] = []
        factory = make_session_factory(make_engine(db_url))
        self.token = SqlTokenStore(factory, "idc-dev-pepper").issue(
            Principal("ops-sg-1", Role.OPS, telco="sg")
        )
        self.sessions = {r.name: NetconfSession(device_of(r)) for r in routers}
        self.vlans: list[int] = []

    def vlan(self) -> int:
        value = next(VLANS)
        self.vlans.append(value)
        return value

    def send(self, message: Message, key: str) -> None:
        encoded = encode_event(message, key)
        self.producer.send(
            "idc.order.events" + self.suffix,
            key=encoded.key,
            value=encoded.payload,
            headers=encoded.headers,
        )
        self.producer.flush()

    def approve(
        self,
        operation: Operation,
        params: common_pb2.CircuitParameters,
        previous: common_pb2.CircuitParameters | None = None,
    ) -> None:
        renderer = Renderer()
        approvals = []
        for side, platform in ((Side.SINGAPORE, "openconfig"), (Side.CHONGQING, "cq-vendor")):
            payload = renderer.render(platform, operation, circuit_end(params, side))
            approvals.append(
                order_pb2.ApprovedPayload(side=side.value, payload_sha256=payload.sha256)
            )
        event = order_pb2.OrderApproved(
            event_id=str(uuid.uuid4()),
            order_id=f"order-{uuid.uuid4().hex[:8]}",
            operation=operation.value,
            circuit=params,
            approvals=approvals,
            price=PRICE,
        )
        if previous is not None:
            event.previous_circuit.CopyFrom(previous)
        self.send(event, params.circuit_id)

    def outcome(
        self, circuit_id: str, kinds: tuple[type[Message], ...] = CIRCUIT_EVENTS[:4], count: int = 1
    ) -> list[Message]:
        def poll() -> list[Message] | None:
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    self.events.append(decode_record(record, REGISTRY)[0])
            found = [
                e
                for e in self.events
                if isinstance(e, kinds) and getattr(e, "circuit_id", "") == circuit_id
            ]
            return found if len(found) >= count else None

        return wait_for(f"{count} event(s) for {circuit_id}", poll, timeout=60)

    def stub(self) -> Any:
        channel = grpc.insecure_channel(self.service.address)
        return pb_grpc.ProvisioningServiceStub(channel)

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]


@pytest.fixture(scope="module")
def stack(
    routers: RouterFleet, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("provisioning")
    devstack = work / "devstack.json"
    devstack.write_text(
        json.dumps(
            {
                "routers": [
                    {
                        "name": r.name,
                        "telco": r.telco,
                        "platform": r.platform,
                        "host": r.host,
                        "port": r.port,
                        "username": r.username,
                        "key_path": str(r.key_path),
                        "known_hosts_path": str(r.known_hosts_path),
                    }
                    for r in routers
                ]
            }
        )
    )
    suffix = f".t{uuid.uuid4().hex[:8]}"
    db_url = f"sqlite:///{work / 'provisioning.db'}"
    env = {
        "IDC_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "IDC_PROVISIONING_DATABASE_URL": db_url,
        "IDC_PROVISIONING_INVENTORY": "devstack",
        "IDC_DEVSTACK_FILE": str(devstack),
        "IDC_PROVISIONING_TOPIC_SUFFIX": suffix,
        "IDC_PROVISIONING_CONFIRM_TIMEOUT_S": "30",
        "IDC_PROVISIONING_STEP_DEADLINE_S": "20",
        "IDC_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "IDC_KAFKA_FETCH_MAX_WAIT_MS": "10",
        "IDC_KAFKA_TOPIC_PARTITIONS": "3",
        "IDC_RELAY_POLL_INTERVAL_S": "0.05",
        "IDC_LOG_FORMAT": "text",
        "IDC_VAR_DIR": str(work),
    }
    service = start_service(
        "provisioning", f"127.0.0.1:{free_port('127.0.0.1')}", env, work / "provisioning.log"
    )
    try:
        wait_serving(service)
        s = Stack(service, kafka_bootstrap, suffix, db_url, routers)
        yield s
        for session in s.sessions.values():
            remove_vlans(session, s.vlans)
            session.close()
    finally:
        service.terminate()


def carries(stack: Stack, params: common_pb2.CircuitParameters) -> dict[str, bool]:
    return {
        name: (end.interface, end.vlan) in subinterfaces(stack.sessions[name])
        for name, end in (
            ("sg-edge-1", circuit_end(params, Side.SINGAPORE)),
            ("cq-edge-1", circuit_end(params, Side.CHONGQING)),
        )
    }


def test_plan_then_create_modify_disconnect(stack: Stack) -> None:
    params = circuit(stack.vlan(), mbps=100)
    stack.send(
        order_pb2.OrderCreated(
            event_id=str(uuid.uuid4()), order_id="o-plan", operation=1, circuit=params, price=PRICE
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
    assert carries(stack, params) == {"sg-edge-1": True, "cq-edge-1": True}

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
    assert carries(stack, params) == {"sg-edge-1": False, "cq-edge-1": False}


def test_chongqing_refusal_leaves_no_trace(stack: Stack) -> None:
    v = stack.vlan()
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
    params = circuit(stack.vlan(), mbps=100)
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
    redeploy = stub.Redeploy(
        pb.RedeployRequest(circuit_id=params.circuit_id), metadata=stack.metadata()
    )
    assert redeploy.saga_id
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


def test_fifty_circuits_at_once_all_active(stack: Stack) -> None:
    circuits = [circuit(stack.vlan(), mbps=10 + i) for i in range(50)]
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
    factory = make_session_factory(make_engine(stack.db_url))
    with factory() as db:
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
