"""Orders through approval, provisioning outcomes (fed as real events through the broker),
rejection, cancellation, failure and expiry; capacity released in each case."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import order_pb2 as order_events
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from idc.type.v1 import circuit_operation_pb2, router_error_pb2, side_pb2
from services.common.config import KafkaSettings
from tests.integration.order.harness import (
    OrderService,
    activated,
    running_order_service,
    wait_for,
)

pytestmark = pytest.mark.integration

S = order_pb2.OrderState
SG, CQ = side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING


def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    assert error.value.code() == code, error.value.details()
    return error.value.details() or ""


def approval_states(order: order_pb2.Order) -> dict[int, int]:
    return {a.side: a.state for a in order.approvals}


def watch(svc: OrderService, order_id: str) -> tuple[threading.Thread, list[object]]:
    seen: list[object] = []

    def run() -> None:
        stream = svc.alice.orders.WatchOrder(
            order_service_pb2.WatchOrderRequest(order_id=order_id), metadata=svc.alice.md,
            timeout=120)
        seen.extend(stream)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, seen


def test_new_change_disconnect_through_payload_bound_approvals(  # noqa: PLR0915 - one story
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.call("CreateOrder", order_service_pb2.CreateOrderRequest(
                request_id=str(uuid.uuid4()),
                spec=circuit_pb2.CircuitSpec(
                    a_end_port_id="sg-edge-1:xe-0/0/2", z_end_port_id="cq-edge-1:XGE0/0/2",
                    bandwidth_mbps=1000, term_months=36, currency_code="USD",
                    description="acme primary", a_end_vlan_id=777,
                    purchase_order="PO-2025/0042"),
                contacts=[order_pb2.Contact(role="noc", name="Ann Lee",
                                            email="ann@acme.example")])).order
        assert order.state == S.ORDER_STATE_PENDING_APPROVAL
        assert order.spec.a_end_vlan_id == 777
        assert order.price.termination_share == "0.50"
        assert [e.to_state for e in order.audit_trail] == [
            S.ORDER_STATE_ACKNOWLEDGED, S.ORDER_STATE_PENDING_APPROVAL]
        thread, stream = watch(svc, order.id)

        # Nothing to approve before the coordinator rendered the payloads.
        assert "not rendered yet" in refused(
            lambda: svc.olga.approve(order.id, "0" * 64), grpc.StatusCode.FAILED_PRECONDITION)
        first = svc.plan_and_wait(order, "v1")
        assert "reload" in refused(lambda: svc.olga.approve(order.id, "0" * 64),
                                   grpc.StatusCode.FAILED_PRECONDITION)
        # Four eyes: the requester's own subject may not approve, whatever the role.
        assert "four-eyes" in refused(lambda: svc.alice_ops.approve(order.id, first[SG]),
                                      grpc.StatusCode.PERMISSION_DENIED)
        after_sg = svc.olga.approve(order.id, first[SG])
        assert approval_states(after_sg) == {SG: order_pb2.APPROVAL_STATE_APPROVED,
                                             CQ: order_pb2.APPROVAL_STATE_PENDING}
        # Another SG ops person cannot approve for CQ: SG's approval is already given.
        assert "already approved" in refused(lambda: svc.sam.approve(order.id, first[CQ]),
                                             grpc.StatusCode.FAILED_PRECONDITION)

        # A new plan voids the approval given for the old payload.
        second = svc.plan_and_wait(order, "v2")
        assert approval_states(svc.alice.order(order.id))[SG] \
            == order_pb2.APPROVAL_STATE_SUPERSEDED
        assert "changed" in refused(lambda: svc.chen.approve(order.id, first[CQ]),
                                    grpc.StatusCode.FAILED_PRECONDITION)
        svc.chen.approve(order.id, second[CQ])
        approved = svc.sam.approve(order.id, second[SG])
        assert approved.state == S.ORDER_STATE_APPROVED
        assert svc.alice.circuit(order.circuit_id).state == circuit_pb2.CIRCUIT_STATE_PROVISIONING
        assert "can no longer be cancelled" in refused(
            lambda: svc.alice.call("CancelOrder", order_service_pb2.CancelOrderRequest(
                order_id=order.id)), grpc.StatusCode.FAILED_PRECONDITION)

        # OrderApproved went out through the outbox with everything provisioning needs.
        events = wait_for(lambda: svc.order_events(order.circuit_id, order_events.OrderApproved),
                          "OrderApproved on the broker")
        event = events[0]
        assert event.order_id == order.id
        assert event.operation == circuit_operation_pb2.CIRCUIT_OPERATION_CREATE
        assert (event.circuit.a_end.telco_id, event.circuit.a_end.router_name,
                event.circuit.a_end.interface_name, event.circuit.a_end.vlan_id) \
            == ("sg", "sg-edge-1", "xe-0/0/2", 777)
        assert (event.circuit.z_end.telco_id, event.circuit.z_end.router_name) \
            == ("cq", "cq-edge-1")
        assert event.circuit.bandwidth_mbps == 1000
        # Ids only: the customer's description stays home, approvers are opaque ids.
        assert event.circuit.description == "IDC acme"
        assert {a.side: a.payload_sha256 for a in event.approvals} == second
        assert {a.side: a.approver for a in event.approvals} == {
            SG: svc.sam.principal.ref, CQ: svc.chen.principal.ref}
        assert b"acme primary" not in event.SerializeToString()
        assert event.price.currency_code == "USD" and event.price.mrc.amount == "7140.00"
        # The purchase-order number travels with the price terms, for billing's invoices.
        assert event.price.purchase_order == "PO-2025/0042"
        # The price book's early-termination share travels with the terms to billing.
        assert event.price.termination_share == "0.50"
        assert b"ann@acme.example" not in event.SerializeToString()
        assert wait_for(lambda: svc.order_events(order.circuit_id, order_events.OrderCreated),
                        "OrderCreated")[0].order_id == order.id

        svc.publish(activated(order), order.circuit_id)
        done = svc.wait_state(order.id, S.ORDER_STATE_COMPLETED)
        thread.join(30)
        assert not thread.is_alive()
        changes = [m.change.to_state for m in stream
                   if m.HasField("change")]  # type: ignore[attr-defined]
        assert changes == [S.ORDER_STATE_APPROVED, S.ORDER_STATE_COMPLETED]
        assert done.audit_trail[-1].actor == "system:provisioning"
        circuit = svc.alice.circuit(order.circuit_id)
        assert circuit.state == circuit_pb2.CIRCUIT_STATE_ACTIVE
        capacity = svc.alice.capacity()
        assert (capacity.channel_committed_mbps, capacity.channel_reserved_mbps) == (1000, 0)

        # A redelivered activation (new event id) changes nothing.
        svc.publish(activated(order), order.circuit_id)

        change = svc.alice.call("ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id=str(uuid.uuid4()), circuit_id=order.circuit_id, bandwidth_mbps=5000,
            reason="growth")).order
        assert change.type == order_pb2.ORDER_TYPE_CHANGE
        assert svc.alice.capacity().channel_reserved_mbps == 4000
        assert "in progress" in refused(
            lambda: svc.alice.call("DisconnectCircuit",
                                   order_service_pb2.DisconnectCircuitRequest(
                                       request_id=str(uuid.uuid4()),
                                       circuit_id=order.circuit_id)),
            grpc.StatusCode.FAILED_PRECONDITION)
        svc.approve_both(change)
        assert svc.alice.circuit(order.circuit_id).state == circuit_pb2.CIRCUIT_STATE_MODIFYING
        # The CHANGE order keeps the circuit's purchase-order number.
        approvals = wait_for(
            lambda: [e for e in svc.order_events(order.circuit_id, order_events.OrderApproved)
                     if e.order_id == change.id], "the change's OrderApproved")
        assert approvals[0].price.purchase_order == "PO-2025/0042"
        svc.publish(circuit_events.CircuitModified(
            event_id=str(uuid.uuid4()), circuit_id=order.circuit_id, order_id=change.id,
            bandwidth_mbps=5000), order.circuit_id)
        svc.wait_state(change.id, S.ORDER_STATE_COMPLETED)
        circuit = svc.alice.circuit(order.circuit_id)
        assert (circuit.state, circuit.bandwidth_mbps) == (circuit_pb2.CIRCUIT_STATE_ACTIVE, 5000)
        assert circuit.purchase_order == "PO-2025/0042"
        assert circuit.price.mrc.amount == "22440.00"
        assert circuit.price.termination_share == "0.50"  # the contract's, kept on a change
        capacity = svc.alice.capacity()
        assert (capacity.channel_committed_mbps, capacity.channel_reserved_mbps) == (5000, 0)

        gone = svc.alice.call("DisconnectCircuit", order_service_pb2.DisconnectCircuitRequest(
            request_id=str(uuid.uuid4()), circuit_id=order.circuit_id, reason="moving")).order
        svc.approve_both(gone)
        svc.publish(circuit_events.CircuitDisconnected(
            event_id=str(uuid.uuid4()), circuit_id=order.circuit_id, order_id=gone.id),
            order.circuit_id)
        svc.wait_state(gone.id, S.ORDER_STATE_COMPLETED)
        assert svc.alice.circuit(order.circuit_id).state \
            == circuit_pb2.CIRCUIT_STATE_DISCONNECTED
        capacity = svc.alice.capacity()
        assert (capacity.channel_committed_mbps, capacity.channel_reserved_mbps) == (0, 0)
        # The VLAN is free again: a new order may ask for it.
        assert svc.alice.create(100, a_port="sg-edge-1:xe-0/0/2",
                                a_end_vlan_id=777).spec.a_end_vlan_id == 777


def test_reject_cancel_and_provisioning_failure_release_capacity(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        rejected, cancelled, failing = (svc.alice.create(b) for b in (100, 200, 500))
        assert svc.alice.capacity().channel_reserved_mbps == 800

        assert "reason" in refused(lambda: svc.chen.call("Reject", _reject(rejected.id, "")),
                                   grpc.StatusCode.INVALID_ARGUMENT)
        after = svc.chen.call("Reject", _reject(rejected.id, "port under maintenance")).order
        assert after.state == S.ORDER_STATE_REJECTED
        assert "port under maintenance" in after.audit_trail[-1].reason
        assert after.audit_trail[-1].actor == "chen@cq"
        assert svc.alice.circuit(rejected.circuit_id).state \
            == circuit_pb2.CIRCUIT_STATE_DISCONNECTED

        done = svc.alice.call("CancelOrder", order_service_pb2.CancelOrderRequest(
            order_id=cancelled.id, reason="budget")).order
        assert done.state == S.ORDER_STATE_CANCELLED
        assert "already CANCELLED" in refused(
            lambda: svc.alice.call("CancelOrder", order_service_pb2.CancelOrderRequest(
                order_id=cancelled.id)), grpc.StatusCode.FAILED_PRECONDITION)
        assert svc.alice.capacity().channel_reserved_mbps == 500

        svc.approve_both(failing)
        svc.publish(circuit_events.ProvisioningFailed(
            event_id=str(uuid.uuid4()), circuit_id=failing.circuit_id, order_id=failing.id,
            operation=circuit_operation_pb2.CIRCUIT_OPERATION_CREATE,
            message="cq-edge-1 refused the configuration", rolled_back=True,
            failures=[circuit_events.RouterFailure(
                rolled_back=True, error=router_error_pb2.RouterError(
                    kind=router_error_pb2.ROUTER_ERROR_KIND_RPC_ERROR, router_name="cq-edge-1",
                    error_tag="invalid-value", message="value not in range"))]),
            failing.circuit_id)
        failed = svc.wait_state(failing.id, S.ORDER_STATE_FAILED)
        assert failed.failure.router_errors[0].message == "value not in range"
        assert failed.failure.rolled_back
        assert "value not in range" in failed.audit_trail[-1].reason
        assert svc.alice.circuit(failing.circuit_id).state == circuit_pb2.CIRCUIT_STATE_FAILED
        capacity = svc.alice.capacity()
        assert (capacity.channel_reserved_mbps, capacity.channel_committed_mbps) == (0, 0)
        assert all(p.used_vlan_count == 0 for p in capacity.ports)
        for order in (rejected, cancelled, failing):
            assert wait_for(lambda o=order: svc.order_events(o.circuit_id, {
                rejected.id: order_events.OrderRejected, cancelled.id: order_events.OrderCancelled,
                failing.id: order_events.OrderCompleted}[o.id]), f"event of {order.id}")


def _reject(order_id: str, reason: str) -> object:
    from idc.ops.v1 import approval_service_pb2

    return approval_service_pb2.RejectRequest(order_id=order_id, reason=reason)


def test_pending_approvals_expire_and_release_capacity(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings, approval_window_s=1,
                               expiry_interval_s=1) as svc:
        order = svc.alice.create(200)
        expired = svc.wait_state(order.id, S.ORDER_STATE_REJECTED)
        assert expired.audit_trail[-1].actor == "system:approval-expiry"
        assert set(approval_states(expired).values()) == {order_pb2.APPROVAL_STATE_EXPIRED}
        assert svc.alice.capacity().channel_reserved_mbps == 0
        event = wait_for(lambda: svc.order_events(order.circuit_id, order_events.OrderRejected),
                         "OrderRejected")[0]
        assert event.expired
