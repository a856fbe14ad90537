"""The REST facade's notification hub and change quotes against the running order service:
a hub subscription gets an order's events signed at a real local HTTPS receiver and none
once deleted, with the gRPC WebhookService's refusals; a change's quote has the figures of
the gRPC PreviewChange for the same circuit, and its refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from idc.order.v1 import order_pb2, order_service_pb2
from idc.order.v1 import webhook_service_pb2 as pb
from services.common.config import KafkaSettings
from services.order.rest.hub import HUB_PATH
from services.order.rest.sonata import QUOTE_PATH
from services.order.webhooks import domain
from tests.integration.order.harness import activated, wait_for
from tests.integration.order.rest_client import ORDERS, Rest, new_circuit, running_rest
from tests.integration.order.test_access_and_input import violations
from tests.integration.order.test_webhooks import FAST, Hooks
from tests.unit.order.webhooks_receiver import Receiver

pytestmark = pytest.mark.integration
CREATED = "idc.events.v1.OrderCreated"


def _arrived(receiver: Receiver, order_id: str) -> list[Any]:
    """The OrderCreated deliveries of ``order_id`` the receiver got, with their documents."""
    return [(r, doc) for r in receiver.bodies()
            if (doc := json.loads(r.body))["type"] == CREATED
            and doc["data"].get("orderId") == order_id]


def test_a_hub_subscription_gets_signed_events_until_it_is_deleted(
        database_url: str, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    receiver.start()
    with running_rest(database_url, kafka_settings, webhook_ca_file=receiver.ca_file,
                      **FAST) as rest:
        created = rest.call("alice", "POST", HUB_PATH, body={
            "callback": receiver.url, "query": "eventType=productOrderStateChangeEvent"})
        assert created.status_code == 201, created.text
        hub = created.json()
        assert created.headers["location"] == f"{HUB_PATH}/{hub['id']}"
        assert hub["secret"].startswith("whsec_") and hub["callback"] == receiver.url
        assert sorted(hub["query"].removeprefix("eventType=").split(",")) \
            == sorted(domain.ORDER_EVENT_TYPES)
        shown = rest.call("alice", "GET", f"{HUB_PATH}/{hub['id']}").json()
        assert shown == {k: v for k, v in hub.items() if k != "secret"}  # the secret once
        # The same subscription over gRPC, and another tenant sees none of it.
        hooks = Hooks(rest.svc.address, "alice")
        listed = hooks("ListSubscriptions", pb.ListSubscriptionsRequest()).subscriptions
        assert [s.id for s in listed] == [hub["id"]]
        hooks.close()
        assert rest.call("bob", "GET", f"{HUB_PATH}/{hub['id']}").status_code == 404
        assert rest.call("bob", "DELETE", f"{HUB_PATH}/{hub['id']}").status_code == 404

        first = rest.call("alice", "POST", ORDERS, body=new_circuit()).json()
        got, doc = wait_for(lambda: _arrived(receiver, first["id"]), "OrderCreated")[0]
        assert domain.verify(hub["secret"], got.headers[domain.SIGNATURE_HEADER], got.body,
                             int(time.time()))
        assert doc["data"]["circuitId"] == first["productOrderItem"][0]["product"]["id"]

        # A second endpoint stays; once the first is deleted, the next order's event comes
        # once, signed by the second's secret only.
        other = rest.call("alice", "POST", HUB_PATH, body={
            "callback": receiver.url, "query": f"eventType={CREATED}"}).json()
        deleted = rest.call("alice", "DELETE", f"{HUB_PATH}/{hub['id']}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert rest.call("alice", "GET", f"{HUB_PATH}/{hub['id']}").status_code == 404
        second = rest.call("alice", "POST", ORDERS, body=new_circuit()).json()
        got, _ = wait_for(lambda: _arrived(receiver, second["id"]), "OrderCreated, again")[0]
        header = got.headers[domain.SIGNATURE_HEADER]
        assert domain.verify(other["secret"], header, got.body, int(time.time()))
        assert not domain.verify(hub["secret"], header, got.body, int(time.time()))
        log = wait_for(lambda: [d for d in Hooks(rest.svc.address, "alice")(
            "ListDeliveries", pb.ListDeliveriesRequest(subscription_id=other["id"])).deliveries
            if d.state == pb.WebhookDelivery.STATE_DELIVERED] or None, "the delivery log")
        assert len(_arrived(receiver, second["id"])) == len(log) == 1
    receiver.stop()


def test_the_hub_refuses_as_the_grpc_webhook_service_does(
        sqlite_database_url: str, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    with running_rest(sqlite_database_url, kafka_settings,
                      webhook_ca_file=receiver.ca_file) as rest:
        hooks = Hooks(rest.svc.address, "alice")

        def both(callback: str, query: str, types: list[str]) -> tuple[Any, dict[str, str]]:
            answer = rest.call("alice", "POST", HUB_PATH,
                               body={"callback": callback, "query": query})
            with pytest.raises(grpc.RpcError) as refused:
                hooks("CreateSubscription", pb.CreateSubscriptionRequest(
                    url=callback, event_types=types))
            return answer, violations(refused.value)

        for callback, query, types in (
                ("http://plain.example/hooks", "", [CREATED]),
                (receiver.url, "eventType=productCreateEvent", ["productCreateEvent"]),
                (receiver.url, "eventType=", [])):
            answer, grpc_violations = both(callback, query, types)
            assert answer.status_code == 422, answer.text
            assert {v["field"]: v["description"] for v in answer.json()["violations"]} \
                == grpc_violations
        bad_query = rest.call("alice", "POST", HUB_PATH,
                              body={"callback": receiver.url, "query": "type=x"})
        assert bad_query.json()["violations"][0]["field"] == "query"
        everything = rest.call("alice", "POST", HUB_PATH, body={"callback": receiver.url})
        assert everything.status_code == 201  # no query: every event type
        assert set(everything.json()["query"].removeprefix("eventType=").split(",")) \
            == set(domain.EVENT_TYPES)
        for _ in range(9):
            assert rest.call("alice", "POST", HUB_PATH,
                             body={"callback": receiver.url}).status_code == 201
        answer, grpc_violations = both(receiver.url, "", [CREATED])
        assert answer.status_code == 422 and "at most 10" in answer.json()["detail"]
        assert {v["field"]: v["description"] for v in answer.json()["violations"]} \
            == grpc_violations
        assert rest.call("olga", "POST", HUB_PATH,
                         body={"callback": receiver.url}).status_code == 403
        hooks.close()


def _active(rest: Rest, mbps: int) -> str:
    order = rest.svc.alice.create(mbps)
    rest.svc.approve_both(order)
    rest.svc.publish(activated(order), order.circuit_id)
    rest.svc.wait_state(order.id, order_pb2.ORDER_STATE_COMPLETED)
    return order.circuit_id


def _quote(rest: Rest, action: str, product: dict[str, Any], zone: str = "Asia/Singapore"
           ) -> Any:
    return rest.call("alice", "POST", QUOTE_PATH, body={"timeZone": zone, "quoteItem": [
        {"id": "1", "action": action, "product": product}]})


def _grpc_preview(rest: Rest, circuit_id: str, **change: Any) -> Any:
    return rest.svc.alice.call("PreviewChange", order_service_pb2.PreviewChangeRequest(
        circuit_id=circuit_id, time_zone="Asia/Singapore", **change)).preview


def _money(value: Any) -> dict[str, str]:
    return {"unit": value.currency_code, "value": value.amount}


def _same_figures(item: dict[str, Any], preview: Any) -> None:
    month = preview.proration
    assert item["quoteItemPrice"]["mrc"] == _money(preview.new_price.mrc)
    assert item["currentPrice"]["mrc"] == _money(preview.current_price.mrc)
    assert item["effectiveDate"] == preview.effective_date
    assert item["proration"] == {
        "month": month.month, "daysInMonth": month.days_in_month,
        "currentDays": month.current_days, "currentAmount": _money(month.current_amount),
        "newDays": month.new_days, "newAmount": _money(month.new_amount),
        "total": _money(month.total)}
    assert item["terminationFee"] == _money(preview.termination_fee)
    assert (item["remainingTermMonths"], item["termEndDate"]) == (
        preview.remaining_term_months, preview.term_end_date)


def test_a_change_quote_has_the_grpc_previews_figures_and_refusals(
        sqlite_database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(sqlite_database_url, kafka_settings) as rest:
        circuit_id = _active(rest, 100)
        orders_before = rest.call("alice", "GET", ORDERS).json()
        modify = _quote(rest, "modify", {"id": circuit_id, "productConfiguration": {
            "@type": "IdcCircuit", "bandwidthMbps": 500}})
        assert modify.status_code == 200, modify.text
        quote = modify.json()
        assert (quote["quoteLevel"], quote["timeZone"]) == ("budgetary", "Asia/Singapore")
        item = quote["quoteItem"][0]
        assert item["product"]["id"] == circuit_id and item["action"] == "modify"
        _same_figures(item, _grpc_preview(rest, circuit_id, modify=order_service_pb2
                                          .BandwidthChange(bandwidth_mbps=500)))
        assert item["terminationFee"]["value"] == "0.00"
        gone = _quote(rest, "delete", {"id": circuit_id}).json()["quoteItem"][0]
        _same_figures(gone, _grpc_preview(rest, circuit_id,
                                          disconnect=order_service_pb2.Disconnect()))
        assert float(gone["terminationFee"]["value"]) > 0  # the whole term remains
        assert rest.call("alice", "GET", ORDERS).json() == orders_before  # nothing placed

        # The gRPC call's refusals: the same bandwidth, a bad zone, another tenant, a
        # circuit with an order in progress.
        same = _quote(rest, "modify", {"id": circuit_id, "productConfiguration": {
            "@type": "IdcCircuit", "bandwidthMbps": 100}})
        with pytest.raises(grpc.RpcError) as refused:
            _grpc_preview(rest, circuit_id,
                          modify=order_service_pb2.BandwidthChange(bandwidth_mbps=100))
        assert same.status_code == 422, same.text
        assert {v["field"]: v["description"] for v in same.json()["violations"]} \
            == violations(refused.value)
        zone = _quote(rest, "delete", {"id": circuit_id}, zone="Mars/Olympus")
        assert zone.status_code == 422 and zone.json()["violations"][0]["field"] == "timeZone"
        assert rest.call("bob", "POST", QUOTE_PATH, body={"quoteItem": [
            {"id": "1", "action": "delete", "product": {"id": circuit_id}}]}).status_code == 404
        assert rest.call("alice", "POST", ORDERS, body={"productOrderItem": [
            {"id": "1", "action": "delete", "product": {"id": circuit_id}}]}).status_code == 201
        busy = _quote(rest, "delete", {"id": circuit_id})
        assert busy.status_code == 409 and busy.json()["reason"] == "FAILED_PRECONDITION", \
            busy.text
