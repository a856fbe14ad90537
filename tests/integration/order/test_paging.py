"""Keyset paging through the API: orders placed while a caller pages neither repeat nor
push others off a page, and the catalogue's sites come in pages."""

from __future__ import annotations

import grpc
import pytest

from idc.order.v1 import order_service_pb2
from services.common.config import KafkaSettings
from tests.integration.order.harness import running_order_service
from tests.integration.order.test_access_and_input import violations

pytestmark = pytest.mark.integration


def test_orders_placed_while_paging_neither_repeat_nor_vanish(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        placed = [svc.alice.create(10).id for _ in range(5)]

        def page(token: str) -> tuple[list[str], str]:
            reply = svc.alice.call("ListOrders", order_service_pb2.ListOrdersRequest(
                page_size=2, page_token=token))
            return [o.id for o in reply.orders], reply.next_page_token

        first, token = page("")
        svc.alice.create(10)  # newer than everything listed: it belongs before page one
        svc.alice.create(10)
        second, token = page(token)
        third, last = page(token)
        assert first + second + third == placed[::-1]
        assert last == ""


def test_sites_come_in_pages_and_a_foreign_token_is_refused(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        seen: list[str] = []
        token = ""
        while True:
            reply = svc.alice.call("ListSites", order_service_pb2.ListSitesRequest(
                page_size=2, page_token=token))
            seen += [site.id for site in reply.sites]
            token = reply.next_page_token
            if not token:
                break
        assert seen == ["cq-ckg1", "cq-ckg2", "sg-sin1", "sg-sin2", "sg-sin3"]
        svc.alice.create(10)
        svc.alice.create(10)
        order_token = svc.alice.call("ListOrders", order_service_pb2.ListOrdersRequest(
            page_size=1)).next_page_token
        with pytest.raises(grpc.RpcError) as refused:
            svc.alice.call("ListSites", order_service_pb2.ListSitesRequest(
                page_token=order_token))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in violations(refused.value)
