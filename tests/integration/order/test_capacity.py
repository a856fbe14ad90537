"""Capacity admission under concurrency and idempotent ordering, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from idc.order.v1 import order_pb2, order_service_pb2
from services.common.config import KafkaSettings
from tests.integration.order.harness import activated, running_order_service, spec

pytestmark = pytest.mark.integration

SG_PORTS = ["sg-edge-1:xe-0/0/1", "sg-edge-1:xe-0/0/2", "sg-edge-1:xe-0/0/3"]
CQ_PORTS = ["cq-edge-1:XGE0/0/1", "cq-edge-1:XGE0/0/2", "cq-edge-1:XGE0/0/3"]


def test_forty_concurrent_orders_never_oversell_the_channel(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    capacity = 1000
    asks = [(50, 100, 200)[i % 3] for i in range(40)]  # 4650 Mbps asked in all
    with running_order_service(database_url, kafka_settings,
                               channel_capacity_mbps=capacity) as svc:

        def place(index: int) -> tuple[int, order_pb2.Order | grpc.RpcError]:
            try:
                return asks[index], svc.alice.create(
                    asks[index], a_port=SG_PORTS[index % 3], z_port=CQ_PORTS[index % 3])
            except grpc.RpcError as error:
                return asks[index], error

        with ThreadPoolExecutor(40) as pool:
            results = list(pool.map(place, range(40)))

        admitted = [(mbps, r) for mbps, r in results if isinstance(r, order_pb2.Order)]
        refused = [(mbps, r) for mbps, r in results if isinstance(r, grpc.RpcError)]
        admitted_total = sum(mbps for mbps, _ in admitted)
        assert admitted and refused
        assert admitted_total <= capacity
        for _, error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            assert "Mbps free of 1000 Mbps" in (error.details() or "")
        figures = svc.alice.capacity()
        assert figures.channel_reserved_mbps == admitted_total
        assert figures.channel_free_mbps == capacity - admitted_total
        assert sum(p.reserved_mbps for p in figures.ports if p.port_id in SG_PORTS) \
            == admitted_total
        if any(mbps == 50 for mbps, _ in refused):
            # A 50 Mbps refusal means less than 50 Mbps was left, and free only shrinks.
            assert figures.channel_free_mbps < 50
        listed = svc.alice.call("ListOrders", order_service_pb2.ListOrdersRequest(
            page_size=1000)).orders
        assert len(listed) == len(admitted)
        vlans = {(o.spec.a_end_port_id, o.spec.a_end_vlan_id) for _, o in admitted}
        assert len(vlans) == len(admitted)  # one VLAN per circuit per port


def test_concurrent_orders_never_oversell_a_port(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        def place(_: int) -> order_pb2.Order | grpc.RpcError:
            try:
                return svc.alice.create(200, z_port="cq-edge-1:GE0/0/1")  # a 1 Gbps port
            except grpc.RpcError as error:
                return error

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(place, range(12)))
        admitted = [r for r in results if isinstance(r, order_pb2.Order)]
        assert len(admitted) == 5
        for error in results:
            if isinstance(error, grpc.RpcError):
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "port cq-edge-1:GE0/0/1 has 0 Mbps free of 1000 Mbps" in (
                    error.details() or "")


def test_one_request_id_retried_concurrently_yields_one_order(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        request = order_service_pb2.CreateOrderRequest(
            request_id=str(uuid.uuid4()), spec=spec(500),
            contacts=[order_pb2.Contact(role="noc", name="Ann", email="ann@acme.example")])
        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(lambda _: svc.alice.call("CreateOrder", request), range(10)))
        assert len({reply.order.id for reply in replies}) == 1
        assert svc.alice.capacity().channel_reserved_mbps == 500
        assert len(svc.alice.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders) \
            == 1

        changed = order_service_pb2.CreateOrderRequest()
        changed.CopyFrom(request)
        changed.spec.bandwidth_mbps = 1000
        with pytest.raises(grpc.RpcError) as refused:
            svc.alice.call("CreateOrder", changed)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "different content" in (refused.value.details() or "")
        assert svc.alice.capacity().channel_reserved_mbps == 500

        # Request ids are per tenant: another tenant may use the same one.
        other = svc.bob.call("CreateOrder", request).order
        assert other.id != replies[0].order.id


def test_bandwidth_changes_and_new_orders_compete_without_overselling(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    capacity = 6000
    with running_order_service(database_url, kafka_settings,
                               channel_capacity_mbps=capacity) as svc:
        active = svc.alice.create(1000)
        svc.approve_both(active)
        svc.publish(activated(active), active.circuit_id)
        svc.wait_state(active.id, order_pb2.ORDER_STATE_COMPLETED)

        def upgrade() -> int | grpc.RpcError:
            try:
                svc.alice.call("ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
                    request_id=str(uuid.uuid4()), circuit_id=active.circuit_id,
                    bandwidth_mbps=5000))
                return 4000
            except grpc.RpcError as error:
                return error

        def place(index: int) -> int | grpc.RpcError:
            try:
                svc.alice.create(1000, a_port=SG_PORTS[index % 3], z_port=CQ_PORTS[index % 3])
                return 1000
            except grpc.RpcError as error:
                return error

        with ThreadPoolExecutor(11) as pool:
            futures = [pool.submit(upgrade)] + [pool.submit(place, i) for i in range(10)]
            results = [f.result() for f in futures]
        admitted = sum(r for r in results if isinstance(r, int))
        for error in results:
            if isinstance(error, grpc.RpcError):
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        figures = svc.alice.capacity()
        assert figures.channel_committed_mbps == 1000
        assert figures.channel_reserved_mbps == admitted
        assert 1000 + admitted <= capacity


def test_concurrent_orders_answer_what_get_order_reads_and_reused_ids_are_refused(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    """Concurrent CreateOrder calls are admitted in shared batches: each reply is the order
    as stored, VLANs are unique per port, and a request id sent at once with two different
    contents makes one order while the other content is refused."""
    with running_order_service(database_url, kafka_settings) as svc:
        shared_id = str(uuid.uuid4())
        requests = [order_service_pb2.CreateOrderRequest(
            request_id=shared_id if index < 6 else str(uuid.uuid4()),
            spec=spec(100 if index % 2 == 0 or index >= 6 else 200,
                      a_port=SG_PORTS[index % 3 if index >= 6 else 0],
                      z_port=CQ_PORTS[index % 3 if index >= 6 else 0]),
            contacts=[order_pb2.Contact(role="noc", name="Ann", email="ann@acme.example")])
            for index in range(30)]

        def place(request: order_service_pb2.CreateOrderRequest
                  ) -> order_pb2.Order | grpc.RpcError:
            try:
                reply: order_pb2.Order = svc.alice.call("CreateOrder", request).order
                return reply
            except grpc.RpcError as error:
                return error

        with ThreadPoolExecutor(30) as pool:
            results = list(pool.map(place, requests))

        shared = results[:6]
        winners = [r for r in shared if isinstance(r, order_pb2.Order)]
        losers = [r for r in shared if isinstance(r, grpc.RpcError)]
        assert len({order.id for order in winners}) == 1
        winning_bandwidth = winners[0].spec.bandwidth_mbps
        assert all(order.spec.bandwidth_mbps == winning_bandwidth for order in winners)
        assert losers and all(e.code() == grpc.StatusCode.ALREADY_EXISTS for e in losers)
        assert len(losers) == sum(1 for request in requests[:6]
                                  if request.spec.bandwidth_mbps != winning_bandwidth)

        orders = [winners[0], *results[6:]]
        assert all(isinstance(order, order_pb2.Order) for order in orders)
        for order in orders:
            assert isinstance(order, order_pb2.Order)
            assert svc.alice.order(order.id) == order
            assert order.state == order_pb2.ORDER_STATE_PENDING_APPROVAL
            assert [a.to_state for a in order.audit_trail] == [
                order_pb2.ORDER_STATE_ACKNOWLEDGED, order_pb2.ORDER_STATE_PENDING_APPROVAL]
        vlans = [(o.spec.a_end_port_id, o.spec.a_end_vlan_id) for o in orders
                 if isinstance(o, order_pb2.Order)]
        assert len(set(vlans)) == len(vlans) == 25
        assert svc.alice.capacity().channel_reserved_mbps == sum(
            o.spec.bandwidth_mbps for o in orders if isinstance(o, order_pb2.Order))

        # ListOrders pages (newest first) show each order exactly as GetOrder does.
        listed: list[order_pb2.Order] = []
        token = ""
        while True:
            page = svc.alice.call("ListOrders", order_service_pb2.ListOrdersRequest(
                page_size=7, page_token=token))
            listed.extend(page.orders)
            token = page.next_page_token
            if not token:
                break
        assert sorted(listed, key=lambda o: o.id) == sorted(
            (o for o in orders if isinstance(o, order_pb2.Order)), key=lambda o: o.id)
        times = [(o.create_time.ToDatetime(), o.id) for o in listed]
        assert times == sorted(times, reverse=True)


def test_the_channel_binds_before_the_ports_of_the_shipped_catalogue(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    """26 orders of 10 Gbps fill the 260 Gbps channel over three 100 Gbps port pairs; the
    next is refused for the channel while its ports still have 20 Gbps free."""
    sg = ["sg-edge-1:et-0/1/0", "sg-edge-1:et-0/1/1", "sg-edge-1:et-0/2/0"]
    cq = ["cq-edge-1:HGE1/0/1", "cq-edge-1:HGE1/0/2", "cq-edge-1:HGE1/0/3"]
    with running_order_service(database_url, kafka_settings,
                               channel_capacity_mbps=260_000) as svc:
        for index in range(26):
            svc.alice.create(10_000, a_port=sg[index % 3], z_port=cq[index % 3])
        with pytest.raises(grpc.RpcError) as refused:
            svc.alice.create(10_000, a_port=sg[2], z_port=cq[2])
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.value.details() or ""
        assert "the channel has 0 Mbps free of 260000 Mbps" in details
        assert "port" not in details.removeprefix("not enough bandwidth: ")
        figures = svc.alice.capacity()
        assert figures.channel_free_mbps == 0
        free = {p.port_id: p.free_mbps for p in figures.ports}
        assert (free[sg[2]], free[cq[2]]) == (20_000, 20_000)
