"""A boost end to end on a clock the test moves: the order service in-process (its clock
injected, no setting for it) with the real broker, PostgreSQL and the real provisioning
service on the real NETCONF routers.

The boost and its revert are booked together, both telcos approve the pair once, and
nobody acts after that: when the clock passes the start the routers carry the boosted
rate, when it passes the end the base rate again, and both CircuitModified events carry
the Boost billing bills (its own ingest reads them). GetCapacity shows the port's
headroom over the boost's window. Before that, admission refuses a new circuit that would
exceed the small port during a booked boost, and cancelling that boost before its start
frees the port again. First, a scheduled lasting change (a start, no end) changes nothing
on the routers before its start and is an ordinary CircuitModified after it. The broker is
the test's own (see test_progress.py).
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from devstack.netconf import RouterFleet
from idc.events.v1 import circuit_pb2 as circuit_events
from idc.ops.v1 import approval_service_pb2
from idc.order.v1 import order_pb2, order_service_pb2
from services.billing.ingest import boost_row_for
from services.common.config import KafkaSettings
from services.common.events.topics import CIRCUIT_EVENTS
from services.order.convert import timestamp
from tests.integration.order.harness import (
    Client,
    OrderService,
    running_order_service,
    spec,
    wait_for,
)
from tests.integration.order.test_progress import own_kafka, remove_circuit
from tests.integration.provisioning.helpers import subinterfaces
from tests.integration.provisioning.stack import Stack, launched

pytestmark = pytest.mark.integration

__all__ = ["own_kafka"]  # the fixture, shared with test_progress.py

S = order_pb2.OrderState
H = timedelta(hours=1)
SMALL_A, SMALL_Z = "sg-edge-1:ge-0/0/10", "cq-edge-1:GE0/0/1"  # 1000 Mbps each


class Clock:
    """The order service's clock: real time at the start, moved only by the test."""

    def __init__(self) -> None:
        self._now = datetime.now(UTC).replace(microsecond=0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance_to(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment


def rates(stack: Stack, order: order_pb2.Order) -> dict[str, int]:
    """The committed rate, in Mbps, each router carries for the circuit's sub-interface."""
    wanted = {"sg-edge-1": (order.spec.a_end_port_id.split(":", 1)[1], order.spec.a_end_vlan_id),
              "cq-edge-1": (order.spec.z_end_port_id.split(":", 1)[1], order.spec.z_end_vlan_id)}
    found = {}
    for name, session in stack.sessions.items():
        leaves = subinterfaces(session).get(wanted[name], {})
        for path, value in leaves.items():
            if path.endswith("/cir"):
                found[name] = int(value) // 1_000_000
            elif path.endswith("/cir-kbps"):
                found[name] = int(value) // 1000
    return found


def book(svc: OrderService, circuit_id: str, mbps: int, start: datetime, end: datetime,
         request_id: str) -> order_pb2.Order:
    order: order_pb2.Order = svc.alice.call(
        "ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id=request_id, circuit_id=circuit_id, bandwidth_mbps=mbps,
            start_time=timestamp(start), end_time=timestamp(end))).order
    return order


def headroom(svc: OrderService, end: datetime) -> list[tuple[datetime, datetime, int]]:
    """The small A port's free Mbps over time, from now to ``end``."""
    timeline = svc.alice.call("GetCapacity", order_service_pb2.GetCapacityRequest(
        port_ids=[SMALL_A], end_time=timestamp(end))).timeline
    return [(i.start_time.ToDatetime(tzinfo=UTC), i.end_time.ToDatetime(tzinfo=UTC),
             i.ports[0].free_mbps) for i in timeline]


def reached(svc: OrderService, order_id: str, state: int) -> order_pb2.Order:
    """The order once in ``state``: provisioning on the routers takes seconds."""
    return wait_for(lambda: (o := svc.alice.order(order_id)).state == state and o,
                    f"order {order_id} {order_pb2.OrderState.Name(state)}", timeout_s=120)


def shown(svc: OrderService, ops: Client, order_id: str) -> str:
    return wait_for(lambda: svc.shown_hash(ops, order_id), f"the payload of {order_id}",
                    timeout_s=60)


def small_circuit_refused(svc: OrderService) -> bool:
    try:
        svc.alice.call("CreateOrder", order_service_pb2.CreateOrderRequest(
            request_id="probe", validate_only=True, spec=spec(10, a_port=SMALL_A,
                                                              z_port=SMALL_Z)))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "port sg-edge-1:ge-0/0/10" in (error.details() or "")
        return True
    return False


def scheduled_lasting_change(svc: OrderService, stack: Stack, clock: Clock,
                             circuit: order_pb2.Order) -> order_pb2.Order:
    """The 100 Mbps ``circuit`` changed to 200 Mbps at a start (no end): nothing on the
    routers before it, both routers at 200 after it; the order, completed."""
    # The order service's clock stands still; provisioning stamps the change with real
    # time, so the start is put a moment after real time now.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    change: order_pb2.Order = svc.alice.call(
        "ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id="later", circuit_id=circuit.circuit_id, bandwidth_mbps=200,
            start_time=timestamp(start))).order
    assert (change.revert_order_id, change.boost_order_id) == ("", "")
    for ops in (svc.olga, svc.chen):
        ops.approve(change.id, shown(svc, ops, change.id))
    assert svc.alice.order(change.id).state == S.ORDER_STATE_SCHEDULED
    wait_for(lambda: datetime.now(UTC) > start, "real time past the start", timeout_s=10)
    # Rounds ran every second meanwhile, on a clock still before the start.
    assert svc.alice.order(change.id).state == S.ORDER_STATE_SCHEDULED
    assert rates(stack, circuit) == {"sg-edge-1": 100, "cq-edge-1": 100}
    clock.advance_to(start + timedelta(seconds=1))
    done = reached(svc, change.id, S.ORDER_STATE_COMPLETED)
    assert rates(stack, circuit) == {"sg-edge-1": 200, "cq-edge-1": 200}
    return done


def test_a_boost_raises_and_reverts_on_both_routers_on_the_clock_without_a_person(
    database_url: str, own_kafka: KafkaSettings, routers: RouterFleet, tmp_path: Path,
) -> None:
    clock = Clock()
    vlan = random.randrange(3000, 3900)
    work = tmp_path / "provisioning"
    work.mkdir()
    with running_order_service(database_url, own_kafka, clock=clock, expiry_interval_s=1) \
            as svc, launched(own_kafka.bootstrap, work, routers,
                             IDC_PROVISIONING_TOPIC_SUFFIX="") as stack:
        new = svc.alice.create(100, a_port=SMALL_A, z_port=SMALL_Z, a_end_vlan_id=vlan,
                               z_end_vlan_id=vlan)
        try:
            for ops in (svc.olga, svc.chen):
                ops.approve(new.id, shown(svc, ops, new.id))
            reached(svc, new.id, S.ORDER_STATE_COMPLETED)
            assert rates(stack, new) == {"sg-edge-1": 100, "cq-edge-1": 100}
            lasting = scheduled_lasting_change(svc, stack, clock, new)
            t0 = clock()

            # A boost to the port's speed leaves no room in its window, even for 10 Mbps.
            first = book(svc, new.circuit_id, 1000, t0 + H, t0 + 3 * H, "boost-1")
            assert small_circuit_refused(svc)
            svc.alice.call("CancelOrder", order_service_pb2.CancelOrderRequest(
                order_id=first.id, reason="too much"))
            assert svc.alice.order(first.revert_order_id).state == S.ORDER_STATE_CANCELLED
            assert not small_circuit_refused(svc), "cancelled before its start: port free"

            boost = book(svc, new.circuit_id, 500, t0 + H, t0 + 3 * H, "boost-2")
            revert_id = boost.revert_order_id
            assert headroom(svc, t0 + 4 * H) == [
                (t0, t0 + H, 800), (t0 + H, t0 + 3 * H, 500), (t0 + 3 * H, t0 + 4 * H, 800)]
            for ops in (svc.olga, svc.chen):
                ops.call("Approve", approval_service_pb2.ApproveRequest(
                    order_id=boost.id, payload_sha256=shown(svc, ops, boost.id),
                    revert_payload_sha256=shown(svc, ops, revert_id)))
            assert svc.alice.order(boost.id).state == S.ORDER_STATE_SCHEDULED
            assert svc.alice.order(revert_id).state == S.ORDER_STATE_SCHEDULED

            clock.advance_to(t0 + H + timedelta(seconds=1))
            reached(svc, boost.id, S.ORDER_STATE_COMPLETED)
            assert rates(stack, new) == {"sg-edge-1": 500, "cq-edge-1": 500}

            clock.advance_to(t0 + 3 * H + timedelta(seconds=1))
            reverted = reached(svc, revert_id, S.ORDER_STATE_COMPLETED)
            assert rates(stack, new) == {"sg-edge-1": 200, "cq-edge-1": 200}
            assert [e.actor for e in reverted.audit_trail if e.to_state in (
                S.ORDER_STATE_SCHEDULED, S.ORDER_STATE_APPROVED)] == [
                "system:scheduler", "system:provisioning"], "no person after the approvals"

            changed, raised, back = svc.order_events(
                new.circuit_id, circuit_events.CircuitModified, CIRCUIT_EVENTS)
            assert (changed.order_id, changed.bandwidth_mbps) == (lasting.id, 200)
            assert not changed.HasField("boost"), "a lasting change is no boost"
            assert changed.effective_time.ToDatetime(tzinfo=UTC) >= lasting.start_time.ToDatetime(
                tzinfo=UTC)
            for event, order_id, revert in ((raised, boost.id, False), (back, revert_id, True)):
                assert (event.order_id, event.boost.boost_id, event.boost.revert,
                        event.boost.base_bandwidth_mbps, event.boost.boosted_bandwidth_mbps) \
                    == (order_id, boost.id, revert, 200, 500)
                assert event.boost.start_time.ToDatetime(tzinfo=UTC) == t0 + H
                assert event.boost.end_time.ToDatetime(tzinfo=UTC) == t0 + 3 * H
                assert event.price.mrc == lasting.price.mrc, "the base price"
                assert event.price.boost_price_per_mbps_hour.amount == "0.04"
                # Billing's own reading of the event takes it as the boost's raise or revert.
                row = boost_row_for(event, order_id, datetime.now(UTC))
                assert (row.boost_id, row.revert, row.base_mbps, row.boosted_mbps,
                        row.price_per_mbps_hour) == (boost.id, revert, 200, 500, "0.04")
        finally:
            remove_circuit(stack, new)
