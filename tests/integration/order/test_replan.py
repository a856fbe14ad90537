"""Plans and replans through the broker: provisioning refused an approved order's payload at
prepare time (its hash changed since approval), so the order goes back to approval with the
new plan; an order for which no payload could be rendered, at submission or at a replan, is
rejected with the reason and its capacity released."""

from __future__ import annotations

import uuid

import grpc
import pytest

from idc.events.v1 import order_pb2 as order_events
from idc.ops.v1 import approval_service_pb2
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from idc.type.v1 import side_pb2
from services.common.config import KafkaSettings
from tests.integration.order.harness import OrderService, activated, running_order_service, wait_for

pytestmark = pytest.mark.integration

S = order_pb2.OrderState
SG, CQ = side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING
APPROVED, SUPERSEDED = order_pb2.APPROVAL_STATE_APPROVED, order_pb2.APPROVAL_STATE_SUPERSEDED


def refused(call: object) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    return error.value.details() or ""


def approvals(order: order_pb2.Order) -> dict[int, tuple[int, str]]:
    return {a.side: (a.state, a.payload_sha256) for a in order.approvals}


def replans_in(order: order_pb2.Order) -> list[str]:
    return [e.reason for e in order.audit_trail
            if (e.from_state, e.to_state) == (S.ORDER_STATE_APPROVED,
                                              S.ORDER_STATE_PENDING_APPROVAL)]


def approved_events(svc: OrderService, order: order_pb2.Order, count: int
                    ) -> list[order_events.OrderApproved]:
    def enough() -> list[order_events.OrderApproved] | None:
        found = svc.order_events(order.circuit_id, order_events.OrderApproved)
        return found if len(found) >= count else None

    return wait_for(enough, f"{count} OrderApproved for {order.id}")


def test_a_replan_sends_the_order_back_to_approval_with_the_new_payloads(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.create(200)
        first = svc.plan_and_wait(order, "v1")
        svc.olga.approve(order.id, first[SG])
        approved = svc.chen.approve(order.id, first[CQ])
        assert approved.state == S.ORDER_STATE_APPROVED
        assert approved_events(svc, order, 1)[0].order_id == order.id

        # Provisioning found Chongqing's payload changed: both routers rolled back, replan.
        reason = "cq-edge-1: rendered payload differs from the approved one"
        second = svc.plan(order, "v1", cq_version="v2", replan=True, reason=reason)
        back = svc.wait_state(order.id, S.ORDER_STATE_PENDING_APPROVAL)
        entry = back.audit_trail[-1]
        assert (entry.actor, entry.reason, entry.from_state) \
            == ("system:provisioning", reason, S.ORDER_STATE_APPROVED)
        # Singapore's payload is unchanged, so its approval holds; Chongqing's is void.
        assert approvals(back) == {SG: (APPROVED, first[SG]), CQ: (SUPERSEDED, first[CQ])}
        assert back.approvals[0].expire_time.ToDatetime() \
            > approved.approvals[0].expire_time.ToDatetime()
        # Capacity and VLANs stay reserved; the circuit waits as before approval.
        assert svc.alice.circuit(order.circuit_id).state == circuit_pb2.CIRCUIT_STATE_RESERVED
        capacity = svc.alice.capacity()
        assert capacity.channel_reserved_mbps == 200
        assert sum(p.used_vlan_count for p in capacity.ports) == 2

        assert svc.shown_hash(svc.chen, order.id) == second[CQ]
        assert svc.shown_hash(svc.olga, order.id) == ""  # nothing left for Singapore to do
        assert "changed" in refused(lambda: svc.chen.approve(order.id, first[CQ]))
        again = svc.chen.approve(order.id, second[CQ])
        assert again.state == S.ORDER_STATE_APPROVED
        assert svc.alice.circuit(order.circuit_id).state \
            == circuit_pb2.CIRCUIT_STATE_PROVISIONING
        events = approved_events(svc, order, 2)
        assert events[1].event_id != events[0].event_id
        assert events[1].order_id == order.id
        assert {a.side: a.payload_sha256 for a in events[1].approvals} == second

        # A second refusal with both payloads changed voids both approvals.
        third = svc.plan(order, "v3", replan=True, reason="both payloads changed")
        back = svc.wait_state(order.id, S.ORDER_STATE_PENDING_APPROVAL)
        assert approvals(back) == {SG: (SUPERSEDED, second[SG]), CQ: (SUPERSEDED, second[CQ])}
        # Another replan event for the same payloads (e.g. from a repeated prepare).
        svc.plan(order, "v3", replan=True, reason="both payloads changed")
        assert svc.shown_hash(svc.olga, order.id) == third[SG]
        assert "changed" in refused(lambda: svc.olga.approve(order.id, second[SG]))
        svc.olga.approve(order.id, third[SG])
        svc.chen.approve(order.id, third[CQ])
        assert {a.side: a.payload_sha256
                for a in approved_events(svc, order, 3)[2].approvals} == third
        # And one arriving after the order was approved again for exactly these payloads.
        svc.plan(order, "v3", replan=True, reason="both payloads changed")

        # The activation comes after the repeated replans on the circuit's partition, so once
        # the order is complete they were consumed: they added nothing.
        svc.publish(activated(order), order.circuit_id)
        done = svc.wait_state(order.id, S.ORDER_STATE_COMPLETED)
        assert replans_in(done) == [reason, "both payloads changed"]
        assert len(svc.order_events(order.circuit_id, order_events.OrderApproved)) == 3

        # A replan of a finished order is ignored. Another order's plan, keyed to the same
        # partition, shows when the consumer is past it.
        svc.plan(order, "v4", replan=True, reason="too late")
        marker = svc.alice.create(100)
        svc.plan(marker, "v1", key=order.circuit_id)
        wait_for(lambda: svc.shown_hash(svc.olga, marker.id), "the marker plan")
        finished = svc.alice.order(order.id)
        assert finished.state == S.ORDER_STATE_COMPLETED
        assert len(finished.audit_trail) == len(done.audit_trail)
        assert svc.alice.circuit(order.circuit_id).state == circuit_pb2.CIRCUIT_STATE_ACTIVE


def test_a_replan_without_payloads_rejects_the_order_and_releases_capacity(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.create(500)
        svc.approve_both(order)
        assert svc.alice.capacity().channel_reserved_mbps == 500

        error = "router 'cq-edge-1' is not a CHONGQING router"
        svc.plan(order, error=error, replan=True, reason="cq-edge-1: payload changed")
        rejected = svc.wait_state(order.id, S.ORDER_STATE_REJECTED)
        back, end = rejected.audit_trail[-2:]
        assert (back.from_state, back.to_state, back.reason) == (
            S.ORDER_STATE_APPROVED, S.ORDER_STATE_PENDING_APPROVAL, "cq-edge-1: payload changed")
        reason = f"provisioning cannot render the router payloads: {error}"
        assert (end.to_state, end.actor, end.reason) \
            == (S.ORDER_STATE_REJECTED, "system:provisioning", reason)
        assert {a.state for a in rejected.approvals} == {SUPERSEDED}
        assert svc.alice.circuit(order.circuit_id).state \
            == circuit_pb2.CIRCUIT_STATE_DISCONNECTED
        capacity = svc.alice.capacity()
        assert (capacity.channel_reserved_mbps, capacity.channel_committed_mbps) == (0, 0)
        assert all(p.used_vlan_count == 0 for p in capacity.ports)
        event = wait_for(lambda: svc.order_events(order.circuit_id, order_events.OrderRejected),
                         "OrderRejected")[0]
        assert (event.order_id, event.reason, event.rejected_by, event.expired) \
            == (order.id, reason, "system:provisioning", False)
        assert event.side == side_pb2.SIDE_UNSPECIFIED


def test_a_plan_error_rejects_an_order_awaiting_approval_with_the_reason(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    """No payload could be rendered at submission: the order does not wait for approvals
    that can never come; the customer sees why, live, and the capacity is free again."""
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.create(500)
        assert svc.alice.capacity().channel_reserved_mbps == 500
        watch = svc.alice.orders.WatchOrder(
            order_service_pb2.WatchOrderRequest(order_id=order.id), metadata=svc.alice.md,
            timeout=60)
        first = next(watch)
        assert first.order.state == S.ORDER_STATE_PENDING_APPROVAL

        error = "circuit cannot be rendered: circuit.a_end.interface_name: an interface name"
        svc.plan(order, error=error)
        reason = f"provisioning cannot render the router payloads: {error}"
        changes = [m.change for m in watch if m.HasField("change")]
        assert [(c.from_state, c.to_state, c.actor, c.reason) for c in changes] == [
            (S.ORDER_STATE_PENDING_APPROVAL, S.ORDER_STATE_REJECTED, "system:provisioning",
             reason)]
        rejected = svc.alice.order(order.id)
        assert rejected.state == S.ORDER_STATE_REJECTED
        assert rejected.audit_trail[-1].reason == reason
        assert svc.alice.circuit(order.circuit_id).state \
            == circuit_pb2.CIRCUIT_STATE_DISCONNECTED
        capacity = svc.alice.capacity()
        assert (capacity.channel_reserved_mbps, sum(p.used_vlan_count for p in capacity.ports)) \
            == (0, 0)
        assert not svc.olga.pending() and not svc.chen.pending()
        event = wait_for(lambda: svc.order_events(order.circuit_id, order_events.OrderRejected),
                         "OrderRejected")[0]
        assert (event.order_id, event.reason, event.rejected_by) \
            == (order.id, reason, "system:provisioning")


def test_a_plan_error_rejects_a_change_and_leaves_the_circuit_as_it_was(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.create(100)
        svc.approve_both(order)
        svc.publish(activated(order), order.circuit_id)
        svc.wait_state(order.id, S.ORDER_STATE_COMPLETED)
        change = svc.alice.call("ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id=uuid.uuid4().hex, circuit_id=order.circuit_id, bandwidth_mbps=1000
        )).order
        assert svc.alice.capacity().channel_reserved_mbps == 900

        svc.plan(change, error="router 'cq-edge-1' is not a CHONGQING router")
        rejected = svc.wait_state(change.id, S.ORDER_STATE_REJECTED)
        assert "cannot render" in rejected.audit_trail[-1].reason
        circuit = svc.alice.circuit(order.circuit_id)
        assert (circuit.state, circuit.bandwidth_mbps, circuit.pending_order_id) \
            == (circuit_pb2.CIRCUIT_STATE_ACTIVE, 100, "")
        capacity = svc.alice.capacity()
        assert (capacity.channel_reserved_mbps, capacity.channel_committed_mbps) == (0, 100)


def test_every_approval_decision_is_an_entry_of_its_own(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.create(200)
        first = svc.plan_and_wait(order, "v1")
        svc.olga.approve(order.id, first[SG])
        svc.chen.approve(order.id, first[CQ])
        second = svc.plan(order, "v1", cq_version="v2", replan=True,
                          reason="cq payload changed")[CQ]
        svc.wait_state(order.id, S.ORDER_STATE_PENDING_APPROVAL)
        svc.chen.approve(order.id, second)

        history = svc.chen.call("ListApprovalHistory", approval_service_pb2
                                .ListApprovalHistoryRequest(order_id=order.id)).decisions
        # The superseded approval and the re-approval are both kept, oldest first.
        assert [(d.side, d.state, d.payload_sha256) for d in history] == [
            (SG, APPROVED, first[SG]),
            (CQ, APPROVED, first[CQ]),
            (CQ, SUPERSEDED, first[CQ]),
            (CQ, APPROVED, second),
        ]
        olga, chen = svc.olga.principal.ref, svc.chen.principal.ref
        assert [d.approver for d in history] == [olga, chen, "system:provisioning", chen]
        # The approvers travel on the event as opaque ids, never their names.
        event = approved_events(svc, order, 2)[1]
        assert {a.side: a.approver for a in event.approvals} == {SG: olga, CQ: chen}
        assert svc.olga.principal.subject not in {a.approver for a in event.approvals}

        rejected = svc.alice.create(100)
        plan = svc.plan_and_wait(rejected, "v1")
        svc.olga.approve(rejected.id, plan[SG])
        svc.chen.call("Reject", approval_service_pb2.RejectRequest(
            order_id=rejected.id, reason="port under maintenance"))
        history = svc.olga.call("ListApprovalHistory", approval_service_pb2
                                .ListApprovalHistoryRequest(order_id=rejected.id)).decisions
        assert [(d.side, d.state, d.approver, d.comment) for d in history] == [
            (SG, APPROVED, olga, "looks right"),
            (CQ, order_pb2.APPROVAL_STATE_REJECTED, chen, "port under maintenance"),
        ]
        with pytest.raises(grpc.RpcError) as denied:
            svc.alice.call("ListApprovalHistory", approval_service_pb2
                           .ListApprovalHistoryRequest(order_id=order.id))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
