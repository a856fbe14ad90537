"""Sonata JSON to the order service's requests, and its answers back to Sonata JSON: pure
functions over the proto messages the use cases take and give."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2, price_pb2, quote_pb2
from idc.type.v1 import side_pb2
from services.common.errors import InvalidArgument
from services.order.rest.body import Body

Json = dict[str, Any]
BASE = "/mefApi/sonata"
POQ_PATH = f"{BASE}/productOfferingQualification/v7/productOfferingQualification"
QUOTE_PATH = f"{BASE}/quoteManagement/v8/quote"
ORDER_PATH = f"{BASE}/productOrderingManagement/v10/productOrder"
CANCEL_PATH = f"{BASE}/productOrderingManagement/v10/cancelProductOrder"
PRODUCT_PATH = f"{BASE}/productInventory/v7/product"

ORDER_STATE = {
    order_pb2.ORDER_STATE_ACKNOWLEDGED: "acknowledged",
    order_pb2.ORDER_STATE_PENDING_APPROVAL: "pending",
    order_pb2.ORDER_STATE_APPROVED: "inProgress",
    order_pb2.ORDER_STATE_IN_PROGRESS: "inProgress",
    order_pb2.ORDER_STATE_COMPLETED: "completed",
    order_pb2.ORDER_STATE_REJECTED: "rejected",
    order_pb2.ORDER_STATE_FAILED: "failed",
    order_pb2.ORDER_STATE_CANCELLED: "cancelled",
    # Approved, waiting for its scheduled start (gRPC ModifyBandwidth.start_time).
    order_pb2.ORDER_STATE_SCHEDULED: "inProgress",
}
ACTION = {order_pb2.ORDER_TYPE_NEW: "add", order_pb2.ORDER_TYPE_CHANGE: "modify",
          order_pb2.ORDER_TYPE_DISCONNECT: "delete"}
PRODUCT_STATUS = {
    circuit_pb2.CIRCUIT_STATE_RESERVED: "pendingActive",
    circuit_pb2.CIRCUIT_STATE_PROVISIONING: "pendingActive",
    circuit_pb2.CIRCUIT_STATE_ACTIVE: "active",
    circuit_pb2.CIRCUIT_STATE_MODIFYING: "pendingModify",
    circuit_pb2.CIRCUIT_STATE_DISCONNECTING: "pendingTerminate",
    circuit_pb2.CIRCUIT_STATE_DISCONNECTED: "terminated",
    circuit_pb2.CIRCUIT_STATE_FAILED: "failed",
}
HEALTH = {circuit_pb2.CIRCUIT_HEALTH_IN_SYNC: "inSync",
          circuit_pb2.CIRCUIT_HEALTH_DRIFT_BEING_REPAIRED: "driftBeingRepaired",
          circuit_pb2.CIRCUIT_HEALTH_OUT_OF_SERVICE: "outOfService"}
# Product status (Sonata) to the circuit states it stands for, for the list filter.
STATUS_FILTER = {status: [state for state, s in PRODUCT_STATUS.items() if s == status]
                 for status in set(PRODUCT_STATUS.values())}
ORDER_STATE_FILTER = {state: [s for s, name in ORDER_STATE.items() if name == state]
                      for state in set(ORDER_STATE.values())}


def instant(moment: Timestamp) -> str | None:
    if not moment.seconds and not moment.nanos:
        return None
    return moment.ToDatetime().isoformat(timespec="milliseconds") + "Z"


def compact(values: Json) -> Json:
    """Sonata leaves absent values out rather than sending nulls."""
    return {k: v for k, v in values.items() if v is not None and v not in ("", [])}


# -- requests --------------------------------------------------------------------------

def circuit_spec(configuration: Body) -> circuit_pb2.CircuitSpec:
    spec = circuit_pb2.CircuitSpec(
        a_end_port_id=configuration.text("aEndPortId"),
        z_end_port_id=configuration.text("zEndPortId"),
        bandwidth_mbps=configuration.integer("bandwidthMbps") or 0,
        burst_mbps=configuration.integer("burstMbps") or 0,
        term_months=configuration.integer("termMonths") or 0,
        currency_code=configuration.text("currencyCode"),
        customer_reference=configuration.text("customerReference"),
        description=configuration.text("description"),
        purchase_order=configuration.text("purchaseOrder"))
    for key, field in (("aEndVlanId", "a_end_vlan_id"), ("zEndVlanId", "z_end_vlan_id")):
        vlan = configuration.integer(key)
        if vlan is not None:
            setattr(spec, field, vlan)
    return spec


def single_item(body: Body, key: str) -> Body:
    """The one item of a Sonata request: this service orders one circuit at a time."""
    items = body.items(key, required=True)
    if len(items) != 1:
        raise InvalidArgument.for_field(key, "takes exactly one item")
    return items[0]


def configuration_of(item: Body) -> Body:
    product = item.child("product", required=True)
    assert product is not None
    configuration = product.child("productConfiguration", required=True)
    assert configuration is not None
    return configuration


def action_of(item: Body, *allowed: str) -> str:
    action = item.text("action", required=True)
    if action not in allowed:
        raise InvalidArgument.for_field(f"{item.path}.action",
                                        f"must be one of {', '.join(allowed)}")
    return action


def contacts(body: Body) -> list[order_pb2.Contact]:
    return [order_pb2.Contact(role=c.text("role"), name=c.text("name"),
                              email=c.text("emailAddress"), phone=c.text("number"))
            for c in body.items("relatedContactInformation", max_items=10)]


OrderRequest = (order_service_pb2.CreateOrderRequest | order_service_pb2.ModifyBandwidthRequest
                | order_service_pb2.DisconnectCircuitRequest)


# A modify item's window: Sonata's requestedStartDate, and requestedEndDate (ours: Sonata
# has no end) for a boost, which reverts by itself then.
WINDOW_FIELDS = (("requestedStartDate", "start_time"), ("requestedEndDate", "end_time"))


def order_request(body: Body, request_id: str) -> OrderRequest:
    """The gRPC request a productOrder stands for: add = new circuit (from a quote or a
    configuration), modify = bandwidth change, delete = disconnect."""
    item = single_item(body, "productOrderItem")
    action = action_of(item, "add", "modify", "delete")
    reason = item.text("note")
    window = {field: item.instant(key) for key, field in WINDOW_FIELDS}
    if action != "modify":
        for key, field in WINDOW_FIELDS:
            if window[field] is not None:
                raise InvalidArgument.for_field(f"{item.path}.{key}",
                                                "only a modify item takes a start or an end")
    if action == "add":
        request = order_service_pb2.CreateOrderRequest(request_id=request_id,
                                                       contacts=contacts(body))
        quote = item.child("quoteItem")
        if quote is not None:
            request.quote_id = quote.text("quoteId", required=True)
        else:
            request.spec.CopyFrom(circuit_spec(configuration_of(item)))
        return request
    product = item.child("product", required=True)
    assert product is not None
    circuit_id = product.text("id", required=True)
    if action == "delete":
        return order_service_pb2.DisconnectCircuitRequest(
            request_id=request_id, circuit_id=circuit_id, reason=reason)
    configuration = product.child("productConfiguration", required=True)
    assert configuration is not None
    change = order_service_pb2.ModifyBandwidthRequest(
        request_id=request_id, circuit_id=circuit_id,
        bandwidth_mbps=configuration.integer("bandwidthMbps") or 0, reason=reason)
    burst = configuration.integer("burstMbps")
    if burst is not None:
        change.burst_mbps = burst
    for field, moment in window.items():
        if moment is not None:
            getattr(change, field).FromDatetime(moment)
    return change


# -- answers ---------------------------------------------------------------------------

def money(value: Any) -> Json:
    return {"unit": value.currency_code, "value": value.amount}


def price(value: price_pb2.Price) -> Json:
    return compact({"recurringChargePeriod": "month", "mrc": money(value.mrc),
                    "nrc": money(value.nrc),
                    "burstPricePerMbps": money(value.burst_price_per_mbps),
                    "termMonths": value.term_months or None,
                    "priceBookVersion": value.price_book_version,
                    "terminationShare": value.termination_share})


def configuration(spec: circuit_pb2.CircuitSpec) -> Json:
    return compact({
        "@type": "IdcCircuit", "aEndPortId": spec.a_end_port_id,
        "zEndPortId": spec.z_end_port_id,
        "aEndVlanId": spec.a_end_vlan_id if spec.HasField("a_end_vlan_id") else None,
        "zEndVlanId": spec.z_end_vlan_id if spec.HasField("z_end_vlan_id") else None,
        "bandwidthMbps": spec.bandwidth_mbps, "burstMbps": spec.burst_mbps,
        "termMonths": spec.term_months or None, "currencyCode": spec.currency_code,
        "customerReference": spec.customer_reference, "description": spec.description,
        "purchaseOrder": spec.purchase_order})


def headroom(quote: quote_pb2.Quote) -> Json:
    return {"channelFreeMbps": quote.channel_free_mbps,
            "aEndPortFreeMbps": quote.a_end_port_free_mbps,
            "zEndPortFreeMbps": quote.z_end_port_free_mbps}


def qualification(quote: quote_pb2.Quote, external_id: str) -> Json:
    item = compact({"id": "1", "action": "add", "headroom": headroom(quote),
                    "state": "qualified" if quote.feasible else "unableToProvide",
                    "terminationError": [{"value": r} for r in quote.infeasible_reasons]})
    return compact({"id": quote.id, "href": f"{POQ_PATH}/{quote.id}", "externalId": external_id,
                    "state": "done.ready" if quote.feasible else "done.unableToProvide",
                    "requestedDate": instant(quote.create_time),
                    "productOfferingQualificationItem": [item]})


def quote(value: quote_pb2.Quote, external_id: str) -> Json:
    state = "approved.orderable" if value.feasible else "unableToProvide"
    item = compact({"id": "1", "action": "add", "state": state,
                    "quoteItemPrice": price(value.price), "headroom": headroom(value),
                    "product": {"productConfiguration": configuration(value.spec)},
                    "terminationError": [{"value": r} for r in value.infeasible_reasons]})
    return compact({"id": value.id, "href": f"{QUOTE_PATH}/{value.id}",
                    "externalId": external_id, "state": state,
                    "quoteDate": instant(value.create_time),
                    "effectiveQuoteCompletionDate": instant(value.create_time),
                    "validFor": {"startDateTime": instant(value.create_time),
                                 "endDateTime": instant(value.expire_time)},
                    "quoteItem": [item]})


def product_order(order: order_pb2.Order) -> Json:
    state = ORDER_STATE.get(order.state, "acknowledged")
    item = compact({
        "id": "1", "action": ACTION.get(order.type, "add"), "state": state,
        "product": {"id": order.circuit_id, "href": f"{PRODUCT_PATH}/{order.circuit_id}",
                    "productConfiguration": configuration(order.spec)},
        "itemPrice": price(order.price),
        "previousBandwidthMbps": order.previous_bandwidth_mbps or None,
        "requestedStartDate": instant(order.start_time),
        "requestedEndDate": instant(order.end_time),
        "revertOrderId": order.revert_order_id, "boostOrderId": order.boost_order_id})
    return compact({
        "id": order.id, "href": f"{ORDER_PATH}/{order.id}", "state": state,
        "idcState": order_pb2.OrderState.Name(order.state).removeprefix("ORDER_STATE_").lower(),
        "orderDate": instant(order.create_time), "completionDate": instant(order.complete_time),
        "stateChangeDate": instant(order.update_time), "requestId": order.request_id,
        "quoteId": order.quote_id, "productOrderItem": [item],
        "relatedContactInformation": [
            compact({"role": c.role, "name": c.name, "emailAddress": c.email,
                     "number": c.phone}) for c in order.contacts],
        "approvals": [compact({"side": side_name(a.side),
                               "state": order_pb2.ApprovalState.Name(a.state)
                               .removeprefix("APPROVAL_STATE_").lower(),
                               "decideDate": instant(a.decide_time)})
                      for a in order.approvals],
        "stateChange": [compact({"state": ORDER_STATE.get(e.to_state, "acknowledged"),
                                 "changeDate": instant(e.time), "changeReason": e.reason})
                        for e in order.audit_trail]})


def rehearsed_order(order: order_pb2.Order) -> Json:
    """A validate-only answer: the order as it would be placed, without the ids (and links)
    of what it would create."""
    body = product_order(order)
    body.pop("href", None)
    if not order.circuit_id:  # an add: the circuit does not exist either
        for item in body["productOrderItem"]:
            item["product"] = compact({**item["product"], "id": "", "href": ""})
    return body


SIDE_NAME: dict[int, str] = {side_pb2.SIDE_SINGAPORE: "singapore",
                             side_pb2.SIDE_CHONGQING: "chongqing"}


def side_name(side: int) -> str:
    return SIDE_NAME.get(side, "unspecified")


def product(circuit: circuit_pb2.Circuit) -> Json:
    spec = circuit_pb2.CircuitSpec(
        a_end_port_id=circuit.a_end.port_id, z_end_port_id=circuit.z_end.port_id,
        a_end_vlan_id=circuit.a_end.vlan_id, z_end_vlan_id=circuit.z_end.vlan_id,
        bandwidth_mbps=circuit.bandwidth_mbps, burst_mbps=circuit.burst_mbps,
        term_months=circuit.term_months, currency_code=circuit.price.currency_code,
        customer_reference=circuit.customer_reference, description=circuit.description,
        purchase_order=circuit.purchase_order)
    return compact({
        "id": circuit.id, "href": f"{PRODUCT_PATH}/{circuit.id}",
        "status": PRODUCT_STATUS.get(circuit.state, "pendingActive"),
        "health": HEALTH.get(circuit.health), "healthSince": instant(circuit.health_since),
        "startDate": instant(circuit.activate_time),
        "terminationDate": instant(circuit.disconnect_time),
        "lastUpdate": instant(circuit.update_time), "termEndDate": instant(circuit.term_end_time),
        "productOrderId": circuit.created_by_order_id,
        "pendingProductOrderId": circuit.pending_order_id,
        "productConfiguration": configuration(spec), "productPrice": price(circuit.price),
        "sandbox": circuit.sandbox})
