"""Tenant isolation on every RPC, role checks, hostile input, and the token command."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from idc.ops.v1 import approval_service_pb2
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common.config import KafkaSettings
from tests.integration.order.harness import (
    Client,
    activated,
    running_order_service,
    spec,
)

pytestmark = pytest.mark.integration


def status_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


def test_customers_see_and_touch_only_their_own_tenant(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.create(100)
        svc.approve_both(order)
        svc.publish(activated(order), order.circuit_id)
        svc.wait_state(order.id, order_pb2.ORDER_STATE_COMPLETED)
        pending = svc.alice.create(200)
        bob = svc.bob
        missing_order, missing_circuit = "ord-" + uuid.uuid4().hex, "cct-" + uuid.uuid4().hex

        def both(call: Callable[[str], object], real: str, missing: str) -> None:
            theirs, absent = status_of(lambda: call(real)), status_of(lambda: call(missing))
            assert theirs.code() == absent.code() == grpc.StatusCode.NOT_FOUND
            assert (theirs.details() or "").replace(real, "X") \
                == (absent.details() or "").replace(missing, "X")

        both(bob.order, order.id, missing_order)
        both(lambda i: list(bob.orders.WatchOrder(
            order_service_pb2.WatchOrderRequest(order_id=i), metadata=bob.md, timeout=10)),
            order.id, missing_order)
        both(lambda i: bob.call("CancelOrder", order_service_pb2.CancelOrderRequest(
            order_id=i)), pending.id, missing_order)
        both(bob.circuit, order.circuit_id, missing_circuit)
        both(lambda i: bob.call("ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id=uuid.uuid4().hex, circuit_id=i, bandwidth_mbps=200)),
            order.circuit_id, missing_circuit)
        both(lambda i: bob.call("DisconnectCircuit", order_service_pb2.DisconnectCircuitRequest(
            request_id=uuid.uuid4().hex, circuit_id=i)), order.circuit_id, missing_circuit)
        quote = svc.alice.call("GetQuote", order_service_pb2.GetQuoteRequest(
            spec=spec(100))).quote
        both(lambda i: bob.call("CreateOrder", order_service_pb2.CreateOrderRequest(
            request_id=uuid.uuid4().hex, quote_id=i)), quote.id, "qte-" + uuid.uuid4().hex)

        assert not bob.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders
        assert not bob.call("ListCircuits", order_service_pb2.ListCircuitsRequest()).circuits
        for method, request in (
            ("ListOrders", order_service_pb2.ListOrdersRequest(tenant_id="acme")),
            ("ListCircuits", order_service_pb2.ListCircuitsRequest(tenant_id="acme")),
        ):
            assert status_of(lambda m=method, r=request: bob.call(m, r)).code() \
                == grpc.StatusCode.PERMISSION_DENIED
        # Nothing of acme's changed through bob's attempts.
        assert svc.alice.order(pending.id).state == order_pb2.ORDER_STATE_PENDING_APPROVAL
        assert svc.alice.circuit(order.circuit_id).pending_order_id == ""

        # Staff read across tenants; ops decide only approvals; customers never approve.
        assert svc.bill.order(order.id).id == order.id
        assert len(svc.olga.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders) \
            == 2
        assert {p.order.id for p in svc.olga.pending()} == {pending.id}
        for client, method, request in (
            (svc.olga, "CreateOrder", order_service_pb2.CreateOrderRequest(
                request_id="x", spec=spec())),
            (svc.alice, "Approve", approval_service_pb2.ApproveRequest(
                order_id=pending.id, payload_sha256="a" * 64)),
            (svc.alice, "Reject", approval_service_pb2.RejectRequest(
                order_id=pending.id, reason="no")),
            (svc.bill, "ListPendingApprovals",
             approval_service_pb2.ListPendingApprovalsRequest()),
        ):
            assert status_of(lambda c=client, m=method, r=request: c.call(m, r)).code() \
                == grpc.StatusCode.PERMISSION_DENIED, method
        # With the circuit active, acme's own change goes through.
        assert svc.alice.call("ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id=uuid.uuid4().hex, circuit_id=order.circuit_id, bandwidth_mbps=50)
        ).order.state == order_pb2.ORDER_STATE_PENDING_APPROVAL


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: dict[str, str] = {}
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def create(client: Client, circuit: circuit_pb2.CircuitSpec) -> grpc.RpcError:
    return status_of(lambda: client.call("CreateOrder", order_service_pb2.CreateOrderRequest(
        request_id=uuid.uuid4().hex, spec=circuit)))


def test_hostile_input_is_refused_clearly_and_changes_nothing(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        alice = svc.alice
        cases = {
            "spec.description": [spec(description="d" * 100_000), spec(description="a\x00b"),
                                 spec(description="<config><delete/></config>"),
                                 spec(description="x]]>y"), spec(description="a\u202eb")],
            "spec.customer_reference": [spec(customer_reference="r\r\nX-Injected: 1")],
            # It crosses the border to billing: a number's shape, nothing personal.
            "spec.purchase_order": [spec(purchase_order="ann@acme.example"),
                                    spec(purchase_order="Ann Lee, 1 Main St"),
                                    spec(purchase_order="P" * 36)],
            "spec.bandwidth_mbps": [spec(-100), spec(2**62), spec(0), spec(123)],
            "spec.burst_mbps": [spec(100, burst_mbps=-5)],
            "spec.term_months": [spec(term_months=-12)],
            "spec.currency_code": [spec(currency_code="DOGE")],
            "spec.a_end_vlan_id": [spec(a_end_vlan_id=70000)],
        }
        for field, specs in cases.items():
            for bad in specs:
                error = create(alice, bad)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
                assert field in violations(error), (field, error.details())
        for request_id in ("", "x" * 129, "bad id\n"):
            error = status_of(lambda r=request_id: alice.call(
                "CreateOrder", order_service_pb2.CreateOrderRequest(request_id=r, spec=spec())))
            assert "request_id" in violations(error)
        error = status_of(lambda: alice.call("CreateOrder", order_service_pb2.CreateOrderRequest(
            request_id="c1", spec=spec(), contacts=[order_pb2.Contact(email="not-mail")] * 11)))
        assert "contacts" in violations(error)

        # Enum numbers the contract does not define.
        for method, request, field in (
            ("ListOrders", order_service_pb2.ListOrdersRequest(states=[99]), "states"),
            ("ListOrders", order_service_pb2.ListOrdersRequest(type=42), "type"),  # type: ignore[arg-type]
            ("ListCircuits", order_service_pb2.ListCircuitsRequest(states=[77]), "states"),
            ("ListSites", order_service_pb2.ListSitesRequest(side=9), "side"),  # type: ignore[arg-type]
            ("ListOrders", order_service_pb2.ListOrdersRequest(page_token="!!"), "page_token"),
        ):
            error = status_of(lambda m=method, r=request: alice.call(m, r))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in violations(error), method

        # 5 MB in one request is refused before it reaches the service.
        error = create(alice, spec(description="x" * (5 * 1024 * 1024)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (error.details() or "")

        assert not alice.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders
        capacity = alice.capacity()
        assert (capacity.channel_reserved_mbps, capacity.channel_committed_mbps) == (0, 0)
        assert all(p.used_vlan_count == 0 for p in capacity.ports)
        # The service still works after all that.
        assert alice.create(100).state == order_pb2.ORDER_STATE_PENDING_APPROVAL


def test_catalogue_quote_and_capacity_reads(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings,
                               channel_capacity_mbps=260_000) as svc:
        sites = svc.alice.call("ListSites", order_service_pb2.ListSitesRequest()).sites
        assert {s.router_name for s in sites} == {"sg-edge-1", "cq-edge-1"}
        ports = {p.id: p for s in sites for p in s.ports}
        assert ports["cq-edge-1:GE0/0/1"].speed_mbps == 1000
        assert ports["sg-edge-1:xe-0/0/1"].free_mbps == 10_000
        quote = svc.alice.call("GetQuote", order_service_pb2.GetQuoteRequest(
            spec=spec(200, currency_code="CNY", term_months=24))).quote
        assert quote.feasible and quote.channel_free_mbps == 260_000
        assert quote.price.mrc.amount == "17280.00" and quote.price.currency_code == "CNY"
        order = svc.alice.call("CreateOrder", order_service_pb2.CreateOrderRequest(
            request_id="from-quote", quote_id=quote.id)).order
        assert (order.quote_id, order.price.mrc.amount) == (quote.id, "17280.00")
        too_big = svc.alice.call("GetQuote", order_service_pb2.GetQuoteRequest(
            spec=spec(1000, z_port="cq-edge-1:GE0/0/1", a_end_vlan_id=order.spec.a_end_vlan_id)
        )).quote
        assert not too_big.feasible
        assert any("already in use" in r for r in too_big.infeasible_reasons)
        after = svc.alice.call("ListSites", order_service_pb2.ListSitesRequest()).sites
        assert {p.id: p for s in after for p in s.ports}["sg-edge-1:xe-0/0/1"].free_mbps \
            == 9_800

