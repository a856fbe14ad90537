"""The facade's mappings without a server: domain errors to problem details, Sonata bodies
to the gRPC requests, answers to Sonata states, keyset cursors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common import errors
from services.common.config import ConfigError
from services.common.errors import InvalidArgument
from services.common.paging import PageRequest, encode_token
from services.order.rest import paging, sonata
from services.order.rest.body import Body
from services.order.rest.problems import PROBLEM_JSON, problem_for, status_of
from services.order.settings import OrderSettings


def _domain_errors() -> list[type[errors.DomainError]]:
    return [c for c in vars(errors).values() if isinstance(c, type)
            and issubclass(c, errors.DomainError) and c is not errors.DomainError]


@pytest.mark.parametrize("error_class", _domain_errors(), ids=lambda c: c.__name__)
def test_every_domain_error_has_a_status_of_its_own_below_500_or_a_retryable_one(
        error_class: type[errors.DomainError]) -> None:
    error = (error_class("x", reason="R") if error_class is errors.Throttled
             else error_class("x"))
    assert status_of(error) in {401, 403, 404, 409, 422, 429, 503, 504}


def test_a_problem_carries_the_reason_and_the_field_violations() -> None:
    response = problem_for(InvalidArgument.for_field("spec.bandwidth_mbps", "too big"), "/x")
    body = json.loads(bytes(response.body))
    assert response.status_code == 422 and response.media_type == PROBLEM_JSON
    assert body == {"type": "https://idc.example/problems/invalid-request",
                    "title": "Unprocessable Entity", "status": 422,
                    "detail": "spec.bandwidth_mbps: too big", "reason": "INVALID_REQUEST",
                    "instance": "/x",
                    "violations": [{"field": "spec.bandwidth_mbps", "description": "too big"}]}


def test_throttled_and_unauthenticated_say_when_and_how_to_come_back() -> None:
    throttled = problem_for(errors.Throttled("slow down", reason="RATE", retry_after_s=0.2))
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
    assert json.loads(bytes(throttled.body))["reason"] == "RATE"
    assert problem_for(errors.Unauthenticated("who")).headers["www-authenticate"] == "Bearer"


def _item(action: str, **product: object) -> Body:
    return Body({"productOrderItem": [{"id": "1", "action": action, "product": product}]})


def test_order_items_map_to_new_change_and_disconnect() -> None:
    new = sonata.order_request(_item("add", productConfiguration={
        "aEndPortId": "a", "zEndPortId": "z", "bandwidthMbps": 100, "aEndVlanId": 7}), "k")
    assert isinstance(new, order_service_pb2.CreateOrderRequest)
    assert (new.request_id, new.spec.bandwidth_mbps, new.spec.a_end_vlan_id) == ("k", 100, 7)
    assert not new.spec.HasField("z_end_vlan_id")
    change = sonata.order_request(_item("modify", id="cct-1", productConfiguration={
        "bandwidthMbps": 500, "burstMbps": 0}), "k")
    assert isinstance(change, order_service_pb2.ModifyBandwidthRequest)
    assert (change.circuit_id, change.bandwidth_mbps, change.HasField("burst_mbps")) == (
        "cct-1", 500, True)
    gone = sonata.order_request(_item("delete", id="cct-1"), "k")
    assert isinstance(gone, order_service_pb2.DisconnectCircuitRequest)
    assert gone.circuit_id == "cct-1"


def test_a_modify_item_takes_a_start_and_an_end_as_the_change_window() -> None:
    body = Body({"productOrderItem": [{
        "id": "1", "action": "modify", "requestedStartDate": "2026-12-05T09:00:00Z",
        "requestedEndDate": "2026-12-05T20:00:00+08:00", "product": {
            "id": "cct-1", "productConfiguration": {"bandwidthMbps": 500}}}]})
    boost = sonata.order_request(body, "k")
    assert isinstance(boost, order_service_pb2.ModifyBandwidthRequest)
    assert (boost.start_time.ToDatetime(tzinfo=UTC), boost.end_time.ToDatetime(tzinfo=UTC)) \
        == (datetime(2026, 12, 5, 9, tzinfo=UTC), datetime(2026, 12, 5, 12, tzinfo=UTC))
    shown = sonata.product_order(order_pb2.Order(
        id="ord-1", type=order_pb2.ORDER_TYPE_CHANGE, state=order_pb2.ORDER_STATE_SCHEDULED,
        start_time=boost.start_time, end_time=boost.end_time, revert_order_id="ord-2"))
    item = shown["productOrderItem"][0]
    assert (shown["state"], shown["idcState"]) == ("inProgress", "scheduled")
    assert (item["requestedStartDate"], item["requestedEndDate"], item["revertOrderId"]) == (
        "2026-12-05T09:00:00.000Z", "2026-12-05T12:00:00.000Z", "ord-2")


@pytest.mark.parametrize(("body", "field"), [
    ({"productOrderItem": [{"id": "1", "action": "modify", "requestedStartDate": "tomorrow",
                            "product": {"id": "c", "productConfiguration": {}}}]},
     "productOrderItem[0].requestedStartDate"),
    ({"productOrderItem": [{"id": "1", "action": "delete", "product": {"id": "c"},
                            "requestedEndDate": "2026-12-05T09:00:00Z"}]},
     "productOrderItem[0].requestedEndDate"),
    ({"productOrderItem": []}, "productOrderItem"),
    ({"productOrderItem": [{"id": "1", "action": "move"}]}, "productOrderItem[0].action"),
    ({"productOrderItem": [{"id": "1", "action": "delete", "product": {}}]},
     "productOrderItem[0].product.id"),
    ({"productOrderItem": [{"id": "1", "action": "add", "product": {"productConfiguration": {
        "bandwidthMbps": 2**40}}}]},
     "productOrderItem[0].product.productConfiguration.bandwidthMbps"),
    ({"productOrderItem": [{"id": "1", "action": "add", "product": {"productConfiguration": {
        "bandwidthMbps": True}}}]},
     "productOrderItem[0].product.productConfiguration.bandwidthMbps"),
])
def test_a_malformed_order_names_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        sonata.order_request(Body(body), "k")
    assert [v.field for v in refused.value.violations] == [field]


def test_every_state_has_its_sonata_name() -> None:
    assert set(sonata.ORDER_STATE) == set(order_pb2.OrderState.values()) - {0}
    assert set(sonata.PRODUCT_STATUS) == set(circuit_pb2.CircuitState.values()) - {0}
    order = order_pb2.Order(id="ord-1", type=order_pb2.ORDER_TYPE_DISCONNECT,
                            state=order_pb2.ORDER_STATE_PENDING_APPROVAL, circuit_id="cct-1")
    shown = sonata.product_order(order)
    assert (shown["state"], shown["productOrderItem"][0]["action"]) == ("pending", "delete")
    assert "completionDate" not in shown  # absent, not null


def test_a_cursor_names_the_last_row_and_refuses_anything_else() -> None:
    moment = datetime(2026, 12, 4, 1, 2, 3, 456789, tzinfo=UTC)
    assert paging.page_ask("2", encode_token((moment, "ord-9"))) == PageRequest(
        2, (moment, "ord-9"))
    # Not a token, and a token of another list (devices page by name alone).
    for bad in ("x", "bm90LWEtY3Vyc29y", encode_token(("sg-edge-1",))):
        with pytest.raises(InvalidArgument) as refused:
            paging.page_ask(None, bad)
        assert refused.value.violations[0].field == "after"
    with pytest.raises(InvalidArgument):
        paging.page_ask("0", None)
    assert paging.next_link("/p", {"state": "pending", "after": "old"}, 2, "c") == (
        '</p?state=pending&limit=2&after=c>; rel="next"')


def test_the_rest_address_is_off_unless_set_and_refused_when_malformed() -> None:
    assert OrderSettings.from_env({}).rest_address == ""
    assert OrderSettings.from_env({"IDC_ORDER_REST_ADDRESS": "off"}).rest_address == ""
    assert OrderSettings.from_env(
        {"IDC_ORDER_REST_ADDRESS": "0.0.0.0:8090"}).rest_address == "0.0.0.0:8090"
    for bad in ("8090", "host:", "host:port", "host:70000"):
        with pytest.raises(ConfigError, match="IDC_ORDER_REST_ADDRESS"):
            OrderSettings.from_env({"IDC_ORDER_REST_ADDRESS": bad})
