"""The order service in-process on port 0 against a real database and the real broker,
with gRPC clients for every kind of principal and helpers to feed circuit events."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import provisioning_pb2
from idc.ops.v1 import approval_service_pb2, approval_service_pb2_grpc
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2, order_service_pb2_grpc
from idc.type.v1 import circuit_operation_pb2, router_payload_pb2, side_pb2
from services.common import db
from services.common.auth import Principal, Role
from services.common.call_limits import LimitSettings
from services.common.config import KafkaSettings, ServiceSettings
from services.common.events import encode_event, producer_config
from services.common.events.topics import CIRCUIT_EVENTS, ORDER_EVENTS
from services.common.grpc_server import GrpcApp, call_metadata
from services.common.runtime import ServiceRuntime, create_topics
from services.common.telemetry import configure_telemetry
from services.common.tokens import HarnessKeys
from services.order.app import MIGRATIONS, make_order_app
from services.order.contacts import ContactKeySet
from services.order.context import now
from services.order.settings import OrderSettings

T = TypeVar("T")
SG_PORT = "sg-edge-1:xe-0/0/1"
CQ_PORT = "cq-edge-1:XGE0/0/1"

KEYS = HarnessKeys.generate()
PRINCIPALS = {
    "alice": Principal("alice@acme", Role.CUSTOMER, tenant="acme"),
    "bob": Principal("bob@globex", Role.CUSTOMER, tenant="globex"),
    "olga": Principal("olga@sg", Role.OPS, telco="sg"),
    "chen": Principal("chen@cq", Role.OPS, telco="cq"),
    "sam": Principal("sam@sg", Role.OPS, telco="sg"),
    "alice_ops": Principal("alice@acme", Role.OPS, telco="sg"),
    "bill": Principal("bill@idc", Role.BILLING_ADMIN),
}


def spec(bandwidth: int = 100, *, a_port: str = SG_PORT, z_port: str = CQ_PORT,
         **fields: Any) -> circuit_pb2.CircuitSpec:
    values: dict[str, Any] = {
        "a_end_port_id": a_port, "z_end_port_id": z_port, "bandwidth_mbps": bandwidth,
        "term_months": 12, "currency_code": "SGD", "customer_reference": "PO-1",
        "description": "acme link",
    }
    values.update(fields)
    return circuit_pb2.CircuitSpec(**values)


def wait_for(check: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Client:
    principal: Principal
    token: str
    orders: order_service_pb2_grpc.OrderServiceStub
    approvals: approval_service_pb2_grpc.ApprovalServiceStub

    @property
    def md(self) -> list[tuple[str, str]]:
        return call_metadata(self.token)

    def call(self, method: str, request: Message) -> Any:
        stub: Any = (self.approvals if method in {"ListPendingApprovals", "Approve", "Reject",
                                                  "ListApprovalHistory"}
                     else self.orders)
        return getattr(stub, method)(request, metadata=self.md, timeout=30)

    def create(self, bandwidth: int = 100, request_id: str | None = None,
               **fields: Any) -> order_pb2.Order:
        request = order_service_pb2.CreateOrderRequest(
            request_id=request_id or uuid.uuid4().hex, spec=spec(bandwidth, **fields))
        response = self.call("CreateOrder", request)
        order: order_pb2.Order = response.order
        return order

    def order(self, order_id: str) -> order_pb2.Order:
        response = self.call("GetOrder", order_service_pb2.GetOrderRequest(order_id=order_id))
        order: order_pb2.Order = response.order
        return order

    def circuit(self, circuit_id: str) -> circuit_pb2.Circuit:
        response = self.call("GetCircuit",
                             order_service_pb2.GetCircuitRequest(circuit_id=circuit_id))
        circuit: circuit_pb2.Circuit = response.circuit
        return circuit

    def capacity(self) -> Any:
        return self.call("GetCapacity", order_service_pb2.GetCapacityRequest()).capacity

    def pending(self) -> list[Any]:
        return list(self.call("ListPendingApprovals",
                              approval_service_pb2.ListPendingApprovalsRequest())
                    .pending_approvals)

    def approve(self, order_id: str, sha: str) -> order_pb2.Order:
        order: order_pb2.Order = self.call("Approve", approval_service_pb2.ApproveRequest(
            order_id=order_id, payload_sha256=sha, comment="looks right")).order
        return order


@dataclass
class OrderService:
    app: GrpcApp
    address: str
    kafka: KafkaSettings
    clients: dict[str, Client]
    producer: KafkaProducer
    # The key set the service seals contacts with.
    contact_keys: ContactKeySet

    def __getattr__(self, name: str) -> Client:
        try:
            return self.clients[name]
        except KeyError:
            raise AttributeError(name) from None

    def publish(self, message: Message, key: str) -> None:
        encoded = encode_event(message, key)
        self.producer.send(CIRCUIT_EVENTS, key=encoded.key, value=encoded.payload,
                           headers=encoded.headers).get(timeout=30)

    def plan(self, order: order_pb2.Order, version: str = "v1", error: str = "", *,
             cq_version: str | None = None, replan: bool = False, reason: str = "",
             key: str | None = None) -> dict[int, str]:
        """Publish a ProvisioningPlanned for the order (keyed by ``key``, by default its
        circuit); returns sha256 by side. ``cq_version`` gives Chongqing's payload another
        version than Singapore's."""
        payloads = []
        for side, router, side_version in (
                (side_pb2.SIDE_SINGAPORE, "sg-edge-1", version),
                (side_pb2.SIDE_CHONGQING, "cq-edge-1", cq_version or version)):
            content = f"<config><!-- {order.id} {router} {side_version} --></config>"
            payloads.append(router_payload_pb2.RouterPayload(
                side=side, telco_id="sg" if side == side_pb2.SIDE_SINGAPORE else "cq",
                router_name=router, circuit_id=order.circuit_id, content=content,
                format="netconf-xml",
                sha256=hashlib.sha256(content.encode()).hexdigest()))
        self.publish(provisioning_pb2.ProvisioningPlanned(
            event_id=str(uuid.uuid4()), order_id=order.id, circuit_id=order.circuit_id,
            operation=circuit_operation_pb2.CIRCUIT_OPERATION_CREATE,
            payloads=[] if error else payloads, error=error, replan=replan,
            saga_id=str(uuid.uuid4()) if replan else "", reason=reason),
            key or order.circuit_id)
        return {p.side: p.sha256 for p in payloads}

    def shown_hash(self, ops: Client, order_id: str) -> str:
        for item in ops.pending():
            if item.order.id == order_id:
                return str(item.payload.sha256)
        return ""

    def plan_and_wait(self, order: order_pb2.Order, version: str = "v1") -> dict[int, str]:
        hashes = self.plan(order, version)
        wait_for(lambda: self.shown_hash(self.clients["olga"], order.id)
                 == hashes[side_pb2.SIDE_SINGAPORE], f"plan {version} of {order.id}")
        return hashes

    def approve_both(self, order: order_pb2.Order) -> order_pb2.Order:
        hashes = self.plan_and_wait(order)
        self.olga.approve(order.id, hashes[side_pb2.SIDE_SINGAPORE])
        return self.chen.approve(order.id, hashes[side_pb2.SIDE_CHONGQING])

    def wait_state(self, order_id: str, state: int) -> order_pb2.Order:
        return wait_for(lambda: (o := self.alice.order(order_id)).state == state and o,
                        f"order {order_id} to reach {order_pb2.OrderState.Name(state)}")

    def order_events(self, circuit_id: str, event_type: type[T], topic: str = ORDER_EVENTS
                     ) -> list[T]:
        """Every event of ``event_type`` for the circuit on ``topic`` (by default
        idc.order.events) so far."""
        wanted = event_type.DESCRIPTOR.full_name  # type: ignore[attr-defined]
        consumer = KafkaConsumer(bootstrap_servers=self.kafka.bootstrap,
                                 enable_auto_commit=False, consumer_timeout_ms=1500)
        try:
            partitions = [TopicPartition(topic, p)
                          for p in consumer.partitions_for_topic(topic) or ()]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            found: list[T] = []
            for record in consumer:
                if record.key != circuit_id.encode():
                    continue
                headers = dict(record.headers)
                if headers["event-type"].decode() == wanted:
                    found.append(event_type.FromString(record.value))  # type: ignore[attr-defined]
            return found
        finally:
            consumer.close()


def activated(order: order_pb2.Order) -> circuit_events.CircuitActivated:
    return circuit_events.CircuitActivated(
        event_id=str(uuid.uuid4()), circuit_id=order.circuit_id, order_id=order.id,
        tenant_id=order.tenant_id, bandwidth_mbps=order.spec.bandwidth_mbps)


@contextmanager
def running_order_service(database_url: str, kafka: KafkaSettings,
                          limits: LimitSettings | None = None,
                          clock: Callable[[], datetime] = now,
                          **order_settings: Any) -> Iterator[OrderService]:
    """``clock``: the service's clock (a test that moves time passes its own)."""
    settings = dataclasses.replace(
        ServiceSettings.from_env("order", 0, {}), listen="127.0.0.1:0",
        database_url=database_url, kafka=kafka,
        relay_poll_interval_s=0.05, grace_period_s=2.0)
    db.migrate(database_url, MIGRATIONS)
    create_topics(settings)
    engine = db.make_engine(database_url)
    factory = db.make_session_factory(engine)
    runtime = ServiceRuntime(settings, engine, factory, KEYS.settings(),
                             configure_telemetry("order", {}))
    order = OrderSettings(consumer_group=f"order-test-{uuid.uuid4().hex[:8]}",
                          **order_settings)
    contact_keys = ContactKeySet.generate("test-1")
    app = make_order_app(runtime, order, contact_keys, clock)
    if limits is not None:
        app.limits = limits
    port = app.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(address)
    producer = KafkaProducer(**producer_config(kafka))
    clients = {
        name: Client(principal, KEYS.mint(principal),
                     order_service_pb2_grpc.OrderServiceStub(channel),
                     approval_service_pb2_grpc.ApprovalServiceStub(channel))
        for name, principal in PRINCIPALS.items()
    }
    try:
        yield OrderService(app, address, kafka, clients, producer, contact_keys)
    finally:
        producer.close()
        channel.close()
        app.stop()
