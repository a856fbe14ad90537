"""The facade's operations: Sonata resources over the order service's use cases, with the
gRPC API's access rules (services.order.access) and its domain errors."""

from __future__ import annotations

import uuid
from typing import Any

from idc.order.v1 import order_pb2, order_service_pb2
from services.common.auth import Role, current_principal, require_role
from services.common.errors import InvalidArgument
from services.order import access, convert, store
from services.order.rest import hub, paging, sonata
from services.order.rest.body import Body
from services.order.rest.change_quote import change_quote
from services.order.rest.operations import Backend, Call, Operation, Parameter, Reply
from services.order.rest.schemas import ID

PRODUCT_ORDER, INVENTORY, QUALIFICATION = "productOrder", "product", "productOfferingQualification"


def _body(call: Call) -> Body:
    assert call.body is not None  # the router reads the body of every operation with one
    return call.body


def _priced(api: Backend, call: Call) -> tuple[Any, str]:
    body = _body(call)
    key = ("productOfferingQualificationItem" if "productOfferingQualification" in call.path
           else "quoteItem")
    item = sonata.single_item(body, key)
    sonata.action_of(item, "add")
    spec = sonata.circuit_spec(sonata.configuration_of(item))
    principal = require_role(Role.CUSTOMER)
    return convert.quote(spec, *api.orders.placing.quote(principal, spec)), body.text("externalId")


def create_qualification(api: Backend, call: Call) -> Reply:
    quote, external_id = _priced(api, call)
    return Reply(sonata.qualification(quote, external_id), 201)


def create_quote(api: Backend, call: Call) -> Reply:
    """A new circuit's quote (add, stored and orderable), or a change's (modify, delete)."""
    item = sonata.single_item(_body(call), "quoteItem")
    action = sonata.action_of(item, "add", "modify", "delete")
    if action != "add":
        return change_quote(api, _body(call), item, action)
    quote, external_id = _priced(api, call)
    return Reply(sonata.quote(quote, external_id), 201)


def _validate_only(call: Call) -> bool:
    value = call.query.get("validateOnly", "false")
    if value not in {"true", "false"}:
        raise InvalidArgument.for_field("validateOnly", "must be true or false")
    return value == "true"


def create_product_order(api: Backend, call: Call) -> Reply:
    principal = require_role(Role.CUSTOMER)
    rehearsal = _validate_only(call)
    request = sonata.order_request(_body(call), call.idempotency_key or uuid.uuid4().hex)
    # The gRPC API's validate_only: every check and the price, nothing stored or reserved
    # (the Idempotency-Key stays unused).
    request.validate_only = rehearsal
    order: order_pb2.Order
    if isinstance(request, order_service_pb2.CreateOrderRequest):
        order = api.orders.placing.create_order(principal, request)
    elif isinstance(request, order_service_pb2.ModifyBandwidthRequest):
        access.require_id(request.circuit_id, "productOrderItem[0].product.id", "circuit")
        order = api.orders.changing.modify_bandwidth(principal, request)
    else:
        access.require_id(request.circuit_id, "productOrderItem[0].product.id", "circuit")
        order = api.orders.changing.disconnect(principal, request)
    api.orders.reveal(principal, order)
    if rehearsal:
        return Reply(sonata.rehearsed_order(order), 200)
    return Reply(sonata.product_order(order), 201,
                 {"Location": f"{sonata.ORDER_PATH}/{order.id}"})


def get_product_order(api: Backend, call: Call) -> Reply:
    principal = current_principal()
    order_id = call.path_params["id"]
    access.require_id(order_id, "id", "order")
    with api.orders.uow.read_one_statement() as session:
        row, approvals, audit = store.order_with_history(session, order_id,
                                                         access.scope(principal))
    order = convert.order_message(row, approvals, audit)
    api.orders.contacts.reveal_rows(principal, [(order, row)])
    return Reply(sonata.product_order(order))


def list_product_orders(api: Backend, call: Call) -> Reply:
    principal = current_principal()
    tenant = access.tenant_filter(principal, "")
    states = _states(call.query.get("state"), sonata.ORDER_STATE_FILTER, "state")
    page = paging.page_ask(call.query.get("limit"), call.query.get("after"))
    with api.orders.uow.read_one_statement() as session:
        orders, cursor = store.list_orders(
            session, page, tenant=tenant, order_type=None,
            states=convert.order_states_from_proto(states, "state"),
            circuit_id=call.query.get("productId", ""))
    messages = [convert.order_message(*order) for order in orders]
    api.orders.contacts.reveal_rows(
        principal, [(m, order[0]) for m, order in zip(messages, orders, strict=True)])
    return _page(call, [sonata.product_order(m) for m in messages], page.limit, cursor)


def cancel_product_order(api: Backend, call: Call) -> Reply:
    principal = require_role(Role.CUSTOMER, Role.ADMIN)
    body = _body(call)
    ref = body.child("productOrder", required=True)
    assert ref is not None
    order_id = ref.text("id", required=True)
    access.require_id(order_id, "productOrder.id", "order")
    reason = body.text("cancellationReason")
    order = api.orders.changing.cancel(principal, order_id, reason)
    api.orders.reveal(principal, order)
    return Reply({"id": f"cancel-{order.id}", "state": "done", "cancellationReason": reason,
                  "productOrder": sonata.product_order(order)}, 201)


def get_product(api: Backend, call: Call) -> Reply:
    principal = current_principal()
    circuit_id = call.path_params["id"]
    access.require_id(circuit_id, "id", "circuit")
    with api.orders.uow.read() as session:
        row = store.get_circuit(session, circuit_id, access.scope(principal))
        return Reply(sonata.product(convert.circuit(api.orders.catalogue, row)))


def list_products(api: Backend, call: Call) -> Reply:
    principal = current_principal()
    tenant = access.tenant_filter(principal, "")
    states = _states(call.query.get("status"), sonata.STATUS_FILTER, "status")
    page = paging.page_ask(call.query.get("limit"), call.query.get("after"))
    with api.orders.uow.read() as session:
        rows, cursor = store.list_circuits(
            session, page, tenant=tenant, port_id="",
            states=convert.circuit_states_from_proto(states, "status"))
        products = [sonata.product(convert.circuit(api.orders.catalogue, row)) for row in rows]
    return _page(call, products, page.limit, cursor)


def _states(value: str | None, table: dict[str, list[Any]], field: str) -> list[Any]:
    if not value:
        return []
    if value not in table:
        raise InvalidArgument.for_field(field, f"must be one of {', '.join(sorted(table))}")
    return table[value]


def _page(call: Call, items: list[dict[str, Any]], limit: int, cursor: str) -> Reply:
    headers = {"X-Result-Count": str(len(items))}
    if cursor:
        headers["Link"] = paging.next_link(call.path, call.query, limit, cursor)
    return Reply(items, 200, headers)


ID_PATH = Parameter("id", "path", ID, "the resource's id", required=True)
LIMIT = Parameter("limit", "query", {"type": "integer", "minimum": 1,
                                     "maximum": store.MAX_PAGE_SIZE},
                  f"page size (default {store.DEFAULT_PAGE_SIZE})")
AFTER = Parameter("after", "query", {"type": "string", "maxLength": 512},
                  "cursor from the previous page's Link header (rel=next)")
IDEMPOTENCY_KEY = Parameter(
    "Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 128},
    "the order's request id: the same key with the same body answers the same order")

EXAMPLE_ITEM = {"id": "1", "action": "add", "product": {"productConfiguration": {
    "@type": "IdcCircuit", "aEndPortId": "sg-edge-1:xe-0/0/1", "zEndPortId": "cq-edge-1:XGE0/0/1",
    "bandwidthMbps": 100, "termMonths": 12, "currencyCode": "SGD",
    "customerReference": "PO-1"}}}

OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", sonata.POQ_PATH, "createProductOfferingQualification",
              "Feasibility and headroom of one circuit configuration", QUALIFICATION,
              create_qualification, "ProductOfferingQualification", 201,
              "ProductOfferingQualification_Create",
              example={"productOfferingQualificationItem": [EXAMPLE_ITEM]}),
    Operation("POST", sonata.QUOTE_PATH, "createQuote", "A priced quote, orderable until it "
              "expires (add), or the price of a change to a product (modify, delete)", "quote",
              create_quote, "Quote", 201, "Quote_Create",
              example={"quoteItem": [EXAMPLE_ITEM]},
              also={200: ("ChangeQuote", "a modify or delete item: the change's new MRC, this "
                          "month's proration and any termination fee (budgetary, not stored)")}),
    Operation("POST", sonata.ORDER_PATH, "createProductOrder",
              "Order a new circuit (add), a bandwidth change (modify) or a disconnect (delete)",
              PRODUCT_ORDER, create_product_order, "ProductOrder", 201, "ProductOrder_Create",
              (IDEMPOTENCY_KEY, Parameter(
                  "validateOnly", "query", {"type": "string", "enum": ["true", "false"]},
                  "true: run every check and answer the order as it would be placed (200, "
                  "no id); nothing is stored or reserved and the Idempotency-Key stays "
                  "unused")),
              example={"productOrderItem": [EXAMPLE_ITEM]},
              also={200: ("ProductOrderRehearsal",
                          "validateOnly=true: the order as it would be placed, not stored")}),
    Operation("GET", sonata.ORDER_PATH, "listProductOrder", "The tenant's orders, newest first",
              PRODUCT_ORDER, list_product_orders, "ProductOrder", parameters=(
                  Parameter("state", "query", {"type": "string",
                                               "enum": sorted(sonata.ORDER_STATE_FILTER)},
                            "only orders in this state"),
                  Parameter("productId", "query", ID, "only orders on this product (circuit)"),
                  LIMIT, AFTER), is_list=True),
    Operation("GET", sonata.ORDER_PATH + "/{id}", "retrieveProductOrder", "One order",
              PRODUCT_ORDER, get_product_order, "ProductOrder", parameters=(ID_PATH,)),
    Operation("POST", sonata.CANCEL_PATH, "createCancelProductOrder",
              "Cancel an order still waiting for approval", PRODUCT_ORDER, cancel_product_order,
              "CancelProductOrder", 201, "CancelProductOrder_Create"),
    Operation("GET", sonata.PRODUCT_PATH, "listProduct",
              "The tenant's circuits with state and health, newest first", INVENTORY,
              list_products, "Product", parameters=(
                  Parameter("status", "query", {"type": "string",
                                                "enum": sorted(sonata.STATUS_FILTER)},
                            "only products in this status"), LIMIT, AFTER), is_list=True),
    Operation("GET", sonata.PRODUCT_PATH + "/{id}", "retrieveProduct", "One circuit",
              INVENTORY, get_product, "Product", parameters=(ID_PATH,)),
    *hub.OPERATIONS,
)
