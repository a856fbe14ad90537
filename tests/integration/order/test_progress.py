"""An approved order with the real provisioning service, through the real broker and
routers: IN_PROGRESS with its step from the saga's start, the provisioning-overdue alarm
raised on the order service's gRPC health while it waits past a short bound, and cleared
when the order completes on both routers.

The coordinator runs first without agents, so the saga waits in its first step for as long
as the test needs; the agents are started once the alarm is seen. The broker is one of the
test's own: the provisioning processes share the order service's topics (no suffix), and
must not pick up other tests' orders.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from devstack.kafka import start_broker
from devstack.netconf import RouterFleet
from devstack.services import health_status
from idc.order.v1 import order_pb2, order_service_pb2
from idc.type.v1 import side_pb2
from services.common.config import KafkaSettings
from services.common.limits import MAX_DESCRIPTION
from services.order import convert
from services.order.domain.catalogue import load_catalogue
from services.order.tables import OrderRow
from services.order.workers import OVERDUE_ALARM
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from tests.fixtures.kafka import (
    TEST_FETCH_MAX_WAIT_MS,
    TEST_HEARTBEAT_INTERVAL_MS,
    TEST_MAX_POLL_INTERVAL_MS,
    TEST_PARTITIONS,
    TEST_SESSION_TIMEOUT_MS,
)
from tests.integration.order.harness import OrderService, running_order_service, wait_for
from tests.integration.provisioning.helpers import device_of, subinterfaces
from tests.integration.provisioning.stack import Stack, launched

pytestmark = pytest.mark.integration

S = order_pb2.OrderState
ALARM = f"idc.alarm.{OVERDUE_ALARM}"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ALARM_S = 3
PLATFORM_OF_SIDE = {Side.SINGAPORE: "openconfig", Side.CHONGQING: "cq-vendor"}


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaSettings]:
    with start_broker(tmp_path / "kafka") as broker:
        yield dataclasses.replace(
            KafkaSettings.from_env(), bootstrap=broker.bootstrap,
            session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=TEST_HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=TEST_MAX_POLL_INTERVAL_MS,
            fetch_max_wait_ms=TEST_FETCH_MAX_WAIT_MS, topic_partitions=TEST_PARTITIONS)


class Watcher:
    """Every (state, step) WatchOrder streams for one order, read in a thread."""

    def __init__(self, svc: OrderService, order_id: str) -> None:
        self.seen: list[tuple[int, str]] = []
        self.error: grpc.RpcError | None = None
        self._stream = svc.alice.orders.WatchOrder(
            order_service_pb2.WatchOrderRequest(order_id=order_id), metadata=svc.alice.md,
            timeout=240)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self._stream:
                self.seen.append((message.order.state, message.order.provisioning_step))
        except grpc.RpcError as error:
            self.error = error

    def finished(self) -> list[tuple[int, str]]:
        self._thread.join(60)
        assert self.error is None, self.error
        return self.seen


def alarm_status(svc: OrderService) -> int:
    return health_status(svc.address, ALARM)


def remove_circuit(stack: Stack, order: order_pb2.Order) -> None:
    """Take the test's circuit off the routers that carry it (cleanup)."""
    catalogue = load_catalogue()
    row = OrderRow(tenant_id=order.tenant_id, a_port_id=order.spec.a_end_port_id,
                   z_port_id=order.spec.z_end_port_id, a_vlan=order.spec.a_end_vlan_id,
                   z_vlan=order.spec.z_end_vlan_id, description=order.spec.description)
    params = convert.circuit_parameters(catalogue, row, order.circuit_id,
                                        order.spec.bandwidth_mbps, order.spec.burst_mbps)
    renderer = Renderer()
    carries = carried(stack, order)
    for router in stack.routers:
        if not carries[router.name]:
            continue
        session = NetconfSession(device_of(router))
        try:
            side = session.device.side
            session.lock_candidate()
            try:
                session.discard()
                session.edit_candidate(renderer.render(
                    PLATFORM_OF_SIDE[side], Operation.DELETE, circuit_end(params, side)).content)
                session.commit()
            finally:
                session.discard()
                session.unlock_candidate()
        finally:
            session.close()


def carried(stack: Stack, order: order_pb2.Order) -> dict[str, bool]:
    wanted = {"sg-edge-1": (order.spec.a_end_port_id.split(":", 1)[1], order.spec.a_end_vlan_id),
              "cq-edge-1": (order.spec.z_end_port_id.split(":", 1)[1], order.spec.z_end_vlan_id)}
    return {name: wanted[name] in subinterfaces(session)
            for name, session in stack.sessions.items()}


def test_an_approved_order_shows_in_progress_with_its_step_and_is_alarmed_when_overdue(
    database_url: str, own_kafka: KafkaSettings, routers: RouterFleet, tmp_path: Path,
) -> None:
    vlan = random.randrange(3000, 3900)
    work = tmp_path / "provisioning"
    work.mkdir()
    with running_order_service(database_url, own_kafka, provisioning_alarm_s=ALARM_S,
                               expiry_interval_s=1) as svc, \
            launched(own_kafka.bootstrap, work, routers,
                     {"coordinator": {"IDC_PROVISIONING_ROLE": "coordinator"}},
                     IDC_PROVISIONING_TOPIC_SUFFIX="",
                     IDC_PROVISIONING_STEP_DEADLINE_S="300") as stack:
        order = svc.alice.create(100, description="d" * MAX_DESCRIPTION,
                                 a_end_vlan_id=vlan, z_end_vlan_id=vlan)
        try:
            assert alarm_status(svc) == SERVING
            # The real coordinator renders both payloads (the 160-character description
            # stays in the order database) and each telco approves exactly what it shows.
            hashes = {
                side: wait_for(lambda ops=ops: svc.shown_hash(ops, order.id),
                               f"{name}'s payload for {order.id}", timeout_s=60)
                for side, name, ops in ((side_pb2.SIDE_SINGAPORE, "sg", svc.olga),
                                        (side_pb2.SIDE_CHONGQING, "cq", svc.chen))}
            watcher = Watcher(svc, order.id)
            # The watch's first message is the state when the server takes the call: wait
            # for it before approving (on a busy machine the call can come after).
            wait_for(lambda: watcher.seen, "the watch's first message", timeout_s=30)
            svc.olga.approve(order.id, hashes[side_pb2.SIDE_SINGAPORE])
            svc.chen.approve(order.id, hashes[side_pb2.SIDE_CHONGQING])

            started = wait_for(
                lambda: (o := svc.alice.order(order.id)).state == S.ORDER_STATE_IN_PROGRESS
                and o, f"order {order.id} IN_PROGRESS", timeout_s=60)
            assert started.provisioning_step == "preparing"
            assert started.provisioning_step_time.seconds > 0
            entry = started.audit_trail[-1]
            assert (entry.from_state, entry.to_state, entry.actor) == (
                S.ORDER_STATE_APPROVED, S.ORDER_STATE_IN_PROGRESS, "system:provisioning")

            # No agent answers: past the bound the alarm is raised, naming the order.
            wait_for(lambda: alarm_status(svc) == NOT_SERVING, f"{ALARM} raised",
                     timeout_s=ALARM_S + 30)
            assert health_status(svc.address) == SERVING, "an alarm leaves the service up"
            assert svc.app.monitor is not None
            [text] = svc.app.monitor.active_alarms()[OVERDUE_ALARM]
            assert text.startswith(f"order {order.id} has waited ")
            assert "since approval without an outcome (IN_PROGRESS, last step 'preparing'" \
                in text

            stack.launch({
                "agent-sg": {"IDC_PROVISIONING_ROLE": "agent", "IDC_PROVISIONING_TELCO": "sg"},
                "agent-cq": {"IDC_PROVISIONING_ROLE": "agent", "IDC_PROVISIONING_TELCO": "cq"},
            })
            done = svc.wait_state(order.id, S.ORDER_STATE_COMPLETED)
            assert carried(stack, order) == {"sg-edge-1": True, "cq-edge-1": True}
            assert done.provisioning_step not in ("", "preparing")
            wait_for(lambda: alarm_status(svc) == SERVING, f"{ALARM} cleared", timeout_s=30)

            seen = watcher.finished()
            states = [state for state, _ in seen]
            assert states[0] == S.ORDER_STATE_PENDING_APPROVAL
            assert states[-1] == S.ORDER_STATE_COMPLETED
            steps = [step for state, step in seen if state == S.ORDER_STATE_IN_PROGRESS]
            assert steps[0] == "preparing"
            assert any(step.startswith("confirming") for step in steps), seen
        finally:
            remove_circuit(stack, order)
