"""The shared limits at the real order API: what provisioning cannot render is refused with
a field violation and nothing stored; the limit itself is accepted."""

from __future__ import annotations

import uuid

import grpc
import pytest

from idc.events.v1 import order_pb2 as order_events
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common.config import KafkaSettings
from services.common.limits import MAX_BURST_MBPS, MAX_DESCRIPTION
from tests.integration.order.harness import activated, running_order_service, spec, wait_for
from tests.integration.order.test_access_and_input import create, status_of, violations

pytestmark = pytest.mark.integration


def test_a_description_provisioning_cannot_render_is_refused_at_create_order(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        alice = svc.alice
        too_long = spec(description="d" * (MAX_DESCRIPTION + 1))
        error = create(alice, too_long)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert violations(error) == {
            "spec.description": f"is {MAX_DESCRIPTION + 1} characters long; at most "
                                f"{MAX_DESCRIPTION} are allowed"}
        quote = status_of(lambda: alice.call(
            "GetQuote", order_service_pb2.GetQuoteRequest(spec=too_long)))
        assert "spec.description" in violations(quote)
        # Nothing stored, nothing reserved.
        assert not alice.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders
        capacity = alice.capacity()
        assert (capacity.channel_reserved_mbps, sum(p.used_vlan_count for p in capacity.ports)) \
            == (0, 0)

        at_limit = alice.create(100, description="d" * MAX_DESCRIPTION)
        assert at_limit.state == order_pb2.ORDER_STATE_PENDING_APPROVAL
        assert at_limit.spec.description == "d" * MAX_DESCRIPTION
        # The order keeps the whole description; provisioning gets the one built from ids.
        created = wait_for(lambda: svc.order_events(at_limit.circuit_id,
                                                    order_events.OrderCreated), "OrderCreated")
        assert created[0].circuit.description == "IDC acme"


def test_a_burst_beyond_the_routers_rate_limits_is_refused_at_modify_bandwidth(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.create(100)
        svc.approve_both(order)
        svc.publish(activated(order), order.circuit_id)
        svc.wait_state(order.id, order_pb2.ORDER_STATE_COMPLETED)

        error = status_of(lambda: svc.alice.call(
            "ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
                request_id=uuid.uuid4().hex, circuit_id=order.circuit_id, bandwidth_mbps=200,
                burst_mbps=MAX_BURST_MBPS + 1)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert f"at most {MAX_BURST_MBPS} Mbps" in violations(error)["burst_mbps"]
        circuit = svc.alice.circuit(order.circuit_id)
        assert (circuit.state, circuit.pending_order_id) \
            == (circuit_pb2.CIRCUIT_STATE_ACTIVE, "")
        assert len(svc.alice.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders) \
            == 1
