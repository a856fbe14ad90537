"""The partner REST facade on the order service: an order through both telcos' approvals
(ops API, gRPC) to an ACTIVE product, a boost booked and cancelled before its start,
problems, idempotency replay and keyset paging."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from idc.order.v1 import order_pb2
from services.common.config import KafkaSettings
from services.order.rest.problems import PROBLEM_JSON
from services.order.rest.sonata import BASE, PRODUCT_PATH
from tests.integration.order.harness import activated, wait_for
from tests.integration.order.rest_client import ORDERS, Rest, new_circuit, running_rest

pytestmark = pytest.mark.integration
POQ = f"{BASE}/productOfferingQualification/v7/productOfferingQualification"
QUOTES = f"{BASE}/quoteManagement/v8/quote"


def test_an_order_through_rest_reaches_an_active_product(
        database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(database_url, kafka_settings) as rest:
        qualified = rest.call("alice", "POST", POQ, body={
            "productOfferingQualificationItem": new_circuit(200)["productOrderItem"]})
        assert qualified.status_code == 201, qualified.text
        item = qualified.json()["productOfferingQualificationItem"][0]
        assert item["state"] == "qualified" and item["headroom"]["channelFreeMbps"] > 0

        quote = rest.call("alice", "POST", QUOTES, body={
            "quoteItem": new_circuit(200)["productOrderItem"]}).json()
        assert quote["state"] == "approved.orderable"
        assert quote["quoteItem"][0]["quoteItemPrice"]["mrc"]["unit"] == "SGD"

        created = rest.call("alice", "POST", ORDERS, body={"productOrderItem": [
            {"id": "1", "action": "add", "quoteItem": {"quoteId": quote["id"]}}]},
            headers={"Idempotency-Key": uuid.uuid4().hex})
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["state"] == "pending"
        assert created.headers["location"] == f"{ORDERS}/{order['id']}"

        grpc_order = rest.svc.alice.order(order["id"])
        rest.svc.approve_both(grpc_order)
        rest.svc.publish(activated(grpc_order), grpc_order.circuit_id)
        done = wait_for(lambda: (o := rest.call("alice", "GET", f"{ORDERS}/{order['id']}")
                                 .json())["state"] == "completed" and o, "order completed")
        assert [a["state"] for a in done["approvals"]] == ["approved", "approved"]
        product_id = done["productOrderItem"][0]["product"]["id"]
        product = rest.call("alice", "GET", f"{PRODUCT_PATH}/{product_id}").json()
        assert product["status"] == "active" and product["sandbox"] is False
        assert product["productConfiguration"]["bandwidthMbps"] == 200
        assert rest.svc.alice.circuit(product_id).bandwidth_mbps == 200

        # Another tenant sees neither the order nor the product: 404, as for a missing id.
        assert rest.call("bob", "GET", f"{ORDERS}/{order['id']}").status_code == 404
        assert rest.call("bob", "GET", f"{PRODUCT_PATH}/{product_id}").status_code == 404

        change = rest.call("alice", "POST", ORDERS, body={"productOrderItem": [
            {"id": "1", "action": "modify", "product": {"id": product_id, "productConfiguration": {
                "@type": "IdcCircuit", "bandwidthMbps": 500}}}]}).json()
        assert change["productOrderItem"][0]["action"] == "modify"
        assert change["productOrderItem"][0]["previousBandwidthMbps"] == 200
        cancelled = rest.call("alice", "POST", f"{BASE}/productOrderingManagement/v10/"
                              "cancelProductOrder", body={"productOrder": {"id": change["id"]},
                                                          "cancellationReason": "not yet"})
        assert cancelled.status_code == 201, cancelled.text
        assert cancelled.json()["productOrder"]["state"] == "cancelled"


def test_problems_carry_the_grpc_reason_and_field_violations(
        database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(database_url, kafka_settings) as rest:
        unauthenticated = rest.call(None, "GET", ORDERS)
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["content-type"] == PROBLEM_JSON
        assert unauthenticated.json()["reason"] == "UNAUTHENTICATED"

        bad = rest.call("alice", "POST", ORDERS, body=new_circuit(0))
        assert bad.status_code == 422, bad.text
        problem = bad.json()
        assert problem["reason"] == "INVALID_REQUEST" and problem["status"] == 422
        assert any(v["field"].endswith("bandwidth_mbps") for v in problem["violations"])

        wrong_type = rest.call("alice", "POST", ORDERS, body={"productOrderItem": "x"})
        assert wrong_type.json()["violations"] == [
            {"field": "productOrderItem", "description": "must be a non-empty array"}]
        not_json = rest.http.post(ORDERS, content=b"{", headers={
            "Authorization": f"Bearer {rest.svc.alice.token}"})
        assert not_json.status_code == 422
        too_big = rest.call("alice", "POST", ORDERS, body={"externalId": "x" * 70_000})
        assert too_big.status_code == 422 and too_big.json()["violations"][0]["field"] == "body"
        assert rest.call("olga", "POST", ORDERS, body=new_circuit()).status_code == 403
        assert rest.call("alice", "GET", f"{ORDERS}/ord-missing").status_code == 404
        huge = rest.call("alice", "POST", ORDERS, body=new_circuit(10_000_000))
        assert huge.status_code in {409, 422}, huge.text


def test_the_idempotency_key_replays_the_same_order(
        database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(database_url, kafka_settings) as rest:
        key = {"Idempotency-Key": uuid.uuid4().hex}
        first = rest.call("alice", "POST", ORDERS, body=new_circuit(), headers=key)
        again = rest.call("alice", "POST", ORDERS, body=new_circuit(), headers=key)
        assert first.status_code == again.status_code == 201
        assert first.json()["id"] == again.json()["id"]
        assert first.json()["requestId"] == key["Idempotency-Key"]
        other = rest.call("alice", "POST", ORDERS, body=new_circuit(200), headers=key)
        assert other.status_code == 409, other.text
        assert other.json()["reason"] == "ALREADY_EXISTS"


def test_lists_page_by_keyset_with_link_headers(
        database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(database_url, kafka_settings) as rest:
        placed = [rest.call("alice", "POST", ORDERS, body=new_circuit(mbps)).json()["id"]
                  for mbps in (10, 20, 50, 100, 200)]
        seen, url, pages = _all_pages(rest, f"{ORDERS}?limit=2&state=pending")
        assert pages == 3 and url == ""
        assert seen == list(reversed(placed))  # newest first, none twice, none missing
        products, _, _ = _all_pages(rest, f"{PRODUCT_PATH}?limit=2")
        assert len(products) == 6  # not the one placed while it paged: newer than its cursor
        assert rest.call("bob", "GET", ORDERS).json() == []
        refused = rest.call("alice", "GET", ORDERS, params={"after": "bm90LWEtY3Vyc29y"})
        assert refused.status_code == 422 and refused.json()["violations"][0]["field"] == "after"


def _all_pages(rest: Rest, url: str) -> tuple[list[str], str, int]:
    seen: list[str] = []
    pages = 0
    while url:
        page = rest.call("alice", "GET", url)
        assert page.status_code == 200, page.text
        pages += 1
        seen += [item["id"] for item in page.json()]
        assert page.headers["x-result-count"] == str(len(page.json()))
        link = page.headers.get("link", "")
        url = link.split(">", 1)[0].removeprefix("<") if link else ""
        if pages == 1:
            # An order placed between pages is newer than the cursor: it shifts no page.
            assert rest.call("alice", "POST", ORDERS, body=new_circuit(10)).status_code == 201
    return seen, url, pages


def test_the_grpc_rate_limits_hold_on_rest_too(database_url: str, kafka_settings: KafkaSettings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDC_RATE_CUSTOMER_PER_S", "0.1")
    monkeypatch.setenv("IDC_RATE_CUSTOMER_BURST", "2")
    with running_rest(database_url, kafka_settings) as rest:
        answers = [rest.call("alice", "GET", ORDERS) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["reason"] == "RATE_LIMITED"
        assert int(answers[2].headers["retry-after"]) >= 1


def test_a_call_in_flight_at_shutdown_is_answered_then_the_port_closes(
        sqlite_database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(sqlite_database_url, kafka_settings) as rest:
        port = int(rest.url.rsplit(":", 1)[1])
        body = json.dumps(new_circuit()).encode()
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        client.sendall(f"POST {ORDERS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       f"Authorization: Bearer {rest.svc.alice.token}\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)  # the request is in flight: headers in, body still coming
        stopping = threading.Thread(target=rest.svc.app.stop)
        stopping.start()
        wait_for(lambda: not _accepts(port), "the REST port to stop taking connections", 10)
        client.sendall(body[10:])
        answer = client.recv(65536).decode()
        client.close()
        stopping.join(30)
        assert answer.startswith("HTTP/1.1 201"), answer
    assert not _accepts(port)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_validate_only_answers_the_order_and_keeps_the_key_unused(
        database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(database_url, kafka_settings) as rest:
        key = {"Idempotency-Key": uuid.uuid4().hex}
        before = rest.call("alice", "GET", ORDERS).json()
        rehearsed = rest.call("alice", "POST", ORDERS, body=new_circuit(), headers=key,
                              params={"validateOnly": "true"})
        assert rehearsed.status_code == 200, rehearsed.text
        assert "Location" not in rehearsed.headers and "id" not in rehearsed.json()
        item = rehearsed.json()["productOrderItem"][0]
        assert item["itemPrice"]["mrc"]["value"] and "id" not in item["product"]
        assert rest.call("alice", "GET", ORDERS).json() == before, "a rehearsal stored an order"
        placed = rest.call("alice", "POST", ORDERS, body=new_circuit(), headers=key)
        assert placed.status_code == 201, placed.text
        assert placed.json()["productOrderItem"][0]["itemPrice"] == item["itemPrice"]
        bad = rest.call("alice", "POST", ORDERS, body=new_circuit(), params={"validateOnly": "1"})
        assert bad.status_code == 422 and bad.json()["violations"][0]["field"] == "validateOnly"


def test_a_boost_booked_over_rest_shows_its_window_and_is_cancelled_before_its_start(
        database_url: str, kafka_settings: KafkaSettings) -> None:
    with running_rest(database_url, kafka_settings) as rest:
        grpc_order = rest.svc.alice.create(100)
        rest.svc.approve_both(grpc_order)
        rest.svc.publish(activated(grpc_order), grpc_order.circuit_id)
        rest.svc.wait_state(grpc_order.id, order_pb2.ORDER_STATE_COMPLETED)
        start = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        end = start + timedelta(hours=2)

        def modify(**window: str) -> httpx2.Response:
            return rest.call("alice", "POST", ORDERS, body={"productOrderItem": [{
                "id": "1", "action": "modify", **window, "product": {
                    "id": grpc_order.circuit_id, "productConfiguration": {
                        "@type": "IdcCircuit", "bandwidthMbps": 500}}}]})

        too_short = modify(requestedStartDate=start.isoformat(),
                           requestedEndDate=(start + timedelta(minutes=30)).isoformat())
        assert too_short.status_code == 422, too_short.text
        assert [v["field"] for v in too_short.json()["violations"]] == ["end_time"]
        no_offset = modify(requestedStartDate="2026-12-05T09:00:00")
        assert no_offset.json()["violations"][0]["field"] == \
            "productOrderItem[0].requestedStartDate"

        booked = modify(requestedStartDate=start.isoformat().replace("+00:00", "Z"),
                        requestedEndDate=end.isoformat())
        assert booked.status_code == 201, booked.text
        order = booked.json()
        item = order["productOrderItem"][0]
        assert (order["state"], order["idcState"]) == ("pending", "pending_approval")
        assert (item["requestedStartDate"], item["requestedEndDate"]) == (
            start.strftime("%Y-%m-%dT%H:%M:%S.000Z"), end.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        revert = rest.call("alice", "GET", f"{ORDERS}/{item['revertOrderId']}").json()
        assert revert["productOrderItem"][0]["boostOrderId"] == order["id"]
        assert revert["productOrderItem"][0]["requestedStartDate"] == item["requestedEndDate"]

        cancelled = rest.call("alice", "POST", f"{BASE}/productOrderingManagement/v10/"
                              "cancelProductOrder", body={"productOrder": {"id": order["id"]},
                                                          "cancellationReason": "not needed"})
        assert cancelled.status_code == 201, cancelled.text
        assert rest.call("alice", "GET", f"{ORDERS}/{item['revertOrderId']}").json()[
            "state"] == "cancelled"
