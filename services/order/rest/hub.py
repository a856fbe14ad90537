"""The Sonata notification hub (``POST/GET/DELETE .../hub``) over the webhook use cases:
the same subscriptions, tenant rule, limit, validation and signed deliveries as the gRPC
WebhookService (services/order/webhooks/)."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.order import access
from services.order.rest import sonata
from services.order.rest.operations import Backend, Call, Operation, Parameter, Reply
from services.order.rest.schemas import ID
from services.order.webhooks.domain import ORDER_EVENT_TYPES
from services.order.webhooks.servicer import caller_tenant
from services.order.webhooks.tables import SubscriptionRow

HUB_PATH = f"{sonata.BASE}/productOrderingManagement/v10/hub"
EVENT = "idc.events.v1."
# Sonata's notification types (Product Ordering and Product Inventory) to the events they
# stand for; a name not here is taken as one of ours (idc.events.v1.*) and checked as such.
SONATA_EVENTS: dict[str, tuple[str, ...]] = {
    "productOrderStateChangeEvent": ORDER_EVENT_TYPES,
    "productOrderItemStateChangeEvent": ORDER_EVENT_TYPES,  # one item per order
    "cancelProductOrderStateChangeEvent": (EVENT + "OrderCancelled",),
    "productStatusChangeEvent": tuple(EVENT + name for name in (
        "CircuitActivated", "CircuitDisconnected", "ProvisioningFailed")),
    "productAttributeValueChangeEvent": tuple(EVENT + name for name in (
        "CircuitModified", "DriftDetected", "DriftCleared")),
}


def event_types(query: str) -> list[str]:
    """``eventType=a,b`` (or ``eventType=a&eventType=b``) to our event types, in order and
    once each; an empty query is every event type (TMF's hub: no filter)."""
    names: list[str] = []
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if key.strip() != "eventType" or not sep:
            raise InvalidArgument.for_field("query", "takes only eventType=<name>[,<name>]")
        names += [name.strip() for name in value.split(",") if name.strip()]
    if not query.strip():
        names = list(SONATA_EVENTS)
    ours = [t for name in names for t in SONATA_EVENTS.get(name, (name,))]
    return list(dict.fromkeys(ours))


def _subscription(row: SubscriptionRow) -> dict[str, str]:
    return {"id": row.id, "href": f"{HUB_PATH}/{row.id}", "callback": row.url,
            "query": "eventType=" + ",".join(row.event_types.split())}


def create_hub(api: Backend, call: Call) -> Reply:
    assert call.body is not None  # the router reads the body of every operation with one
    tenant = caller_tenant()
    row, secret = api.webhooks.create(tenant, call.body.text("callback"),
                                      event_types(call.body.text("query")))
    return Reply({**_subscription(row), "secret": secret}, 201,
                 {"Location": f"{HUB_PATH}/{row.id}"})


def _hub_id(call: Call) -> str:
    hub_id = call.path_params["id"]
    access.require_id(hub_id, "id", "hub subscription")
    return hub_id


def get_hub(api: Backend, call: Call) -> Reply:
    return Reply(_subscription(api.webhooks.subscription(caller_tenant(), _hub_id(call))))


def delete_hub(api: Backend, call: Call) -> Reply:
    api.webhooks.delete(caller_tenant(), _hub_id(call))
    return Reply(None, 204)


HUB_ID = Parameter("id", "path", ID, "the subscription's id", required=True)
OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", HUB_PATH, "registerListener",
              "Subscribe an HTTPS callback to order and product events (signed webhooks)",
              "notificationHub", create_hub, "EventSubscriptionCreated", 201,
              "EventSubscriptionInput",
              example={"callback": "https://partner.example/idc/events",
                       "query": "eventType=productOrderStateChangeEvent,"
                                "productStatusChangeEvent"}),
    Operation("GET", HUB_PATH + "/{id}", "retrieveListener", "One subscription",
              "notificationHub", get_hub, "EventSubscription", parameters=(HUB_ID,)),
    Operation("DELETE", HUB_PATH + "/{id}", "unregisterListener",
              "Remove the subscription, its queued deliveries and log", "notificationHub",
              delete_hub, None, 204, parameters=(HUB_ID,)),
)
