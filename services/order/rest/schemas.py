"""JSON Schemas of the facade's bodies, in Sonata's names (camelCase): the one definition
the handlers' validation and the OpenAPI document both read."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
ID = {"type": "string", "minLength": 1, "maxLength": 128}
TEXT = {"type": "string", "maxLength": 1024}
MBPS = {"type": "integer", "minimum": 1, "maximum": 10_000_000}
INSTANT = {"type": "string", "format": "date-time"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def array_of(item: Schema, max_items: int | None = None) -> Schema:
    schema: Schema = {"type": "array", "items": item}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


COMPONENTS: dict[str, Schema] = {
    "MEFProductConfiguration": obj(
        ("@type",),
        **{"@type": enum("IdcCircuit")},
        aEndPortId=ID, zEndPortId=ID,
        aEndVlanId={"type": "integer", "minimum": 1, "maximum": 4094},
        zEndVlanId={"type": "integer", "minimum": 1, "maximum": 4094},
        bandwidthMbps=MBPS, burstMbps={"type": "integer", "minimum": 0, "maximum": 10_000_000},
        termMonths={"type": "integer", "minimum": 1, "maximum": 120},
        currencyCode={"type": "string", "pattern": "^[A-Z]{3}$"},
        customerReference=TEXT, description=TEXT, purchaseOrder=TEXT),
    "ProductRef": obj(("id",), id=ID, href={"type": "string"}),
    "Money": obj(("unit", "value"), unit={"type": "string"}, value={"type": "string"}),
    "Price": obj(("recurringChargePeriod",),
                 recurringChargePeriod=enum("month"), mrc=ref("Money"), nrc=ref("Money"),
                 burstPricePerMbps=ref("Money"), termMonths={"type": "integer"},
                 priceBookVersion={"type": "string"}, terminationShare={"type": "string"}),
    "Headroom": obj(channelFreeMbps={"type": "integer"}, aEndPortFreeMbps={"type": "integer"},
                    zEndPortFreeMbps={"type": "integer"}),
    "Problem": obj(
        ("type", "title", "status"),
        type={"type": "string"}, title={"type": "string"}, status={"type": "integer"},
        detail={"type": "string"}, instance={"type": "string"}, reason={"type": "string"},
        violations=array_of(obj(("field", "description"), field={"type": "string"},
                                description={"type": "string"}))),
    # productOfferingQualification: feasibility and headroom of one configuration.
    "ProductOfferingQualification_Create": obj(
        ("productOfferingQualificationItem",),
        externalId=TEXT,
        productOfferingQualificationItem=array_of(obj(
            ("id", "action", "product"), id=ID, action=enum("add"),
            product=obj(("productConfiguration",),
                        productConfiguration=ref("MEFProductConfiguration"))), 1)),
    "ProductOfferingQualification": obj(
        ("id", "state", "productOfferingQualificationItem"),
        id=ID, href={"type": "string"}, externalId={"type": "string"},
        state=enum("done.ready", "done.unableToProvide"), requestedDate=INSTANT,
        productOfferingQualificationItem=array_of(obj(
            ("id", "state"), id=ID, state=enum("qualified", "unableToProvide"),
            action=enum("add"), headroom=ref("Headroom"),
            terminationError=array_of(obj(("value",), value={"type": "string"}))))),
    # quote: a priced, orderable offer for one configuration.
    # An add item carries a productConfiguration; a modify or delete item the product's id
    # (and for modify the new bandwidthMbps and burstMbps), priced in timeZone (IANA).
    "Quote_Create": obj(
        ("quoteItem",), externalId=TEXT, timeZone={"type": "string", "maxLength": 64},
        quoteItem=array_of(obj(("id", "action", "product"), id=ID,
                               action=enum("add", "modify", "delete"),
                               product=obj(id=ID, productConfiguration=ref(
                                   "MEFProductConfiguration"))), 1)),
    "Quote": obj(
        ("id", "state", "quoteItem"),
        id=ID, href={"type": "string"}, externalId={"type": "string"},
        state=enum("approved.orderable", "unableToProvide"), quoteDate=INSTANT,
        effectiveQuoteCompletionDate=INSTANT,
        validFor=obj(startDateTime=INSTANT, endDateTime=INSTANT),
        quoteItem=array_of(obj(
            ("id", "state"), id=ID, state=enum("approved.orderable", "unableToProvide"),
            action=enum("add"), quoteItemPrice=ref("Price"), headroom=ref("Headroom"),
            product=obj(productConfiguration=ref("MEFProductConfiguration")),
            terminationError=array_of(obj(("value",), value={"type": "string"}))))),
    # A change's quote: PreviewChange's figures for one product, not stored.
    "ChangeQuote": obj(
        ("quoteLevel", "timeZone", "quoteItem"), externalId={"type": "string"},
        quoteLevel=enum("budgetary"), timeZone={"type": "string"},
        quoteItem=array_of(obj(
            ("action", "product", "quoteItemPrice", "currentPrice", "effectiveDate",
             "proration", "terminationFee", "remainingTermMonths", "termEndDate"),
            id={"type": "string"}, action=enum("modify", "delete"), product=ref("ProductRef"),
            quoteItemPrice=ref("Price"), currentPrice=ref("Price"),
            effectiveDate={"type": "string", "format": "date"},
            proration=obj(
                ("month", "daysInMonth", "currentDays", "currentAmount", "newDays",
                 "newAmount", "total"),
                month={"type": "string"}, daysInMonth={"type": "integer"},
                currentDays={"type": "integer"}, currentAmount=ref("Money"),
                newDays={"type": "integer"}, newAmount=ref("Money"), total=ref("Money")),
            terminationFee=ref("Money"), remainingTermMonths={"type": "integer"},
            termEndDate={"type": "string", "format": "date"}), 1)),
    # The notification hub: signed webhooks (services/order/rest/hub.py).
    "EventSubscriptionInput": obj(
        ("callback",), callback={"type": "string", "maxLength": 2048},
        query={"type": "string", "maxLength": 1024}),
    "EventSubscription": obj(
        ("id", "callback", "query"), id=ID, href={"type": "string"},
        callback={"type": "string"}, query={"type": "string"}),
    # productOrder: one item per order (the service orders one circuit at a time). A modify
    # item may carry a start (Sonata's requestedStartDate) and, for a boost, an end
    # (requestedEndDate: ours, Sonata has none).
    "ProductOrderItem_Create": obj(
        ("id", "action"), id=ID, action=enum("add", "modify", "delete"),
        quoteItem=obj(("quoteId",), quoteId=ID), product=obj(
            id=ID, productConfiguration=ref("MEFProductConfiguration")),
        note=TEXT, requestedStartDate=INSTANT, requestedEndDate=INSTANT),
    "RelatedContactInformation": obj(
        ("role", "name"), role={"type": "string", "maxLength": 64}, name=TEXT,
        emailAddress={"type": "string", "maxLength": 320},
        number={"type": "string", "maxLength": 64}),
    "ProductOrder_Create": obj(
        ("productOrderItem",), externalId=TEXT,
        productOrderItem=array_of(ref("ProductOrderItem_Create"), 1),
        relatedContactInformation=array_of(ref("RelatedContactInformation"), 10)),
    "ProductOrderItem": obj(
        ("id", "action", "state"), id=ID, action=enum("add", "modify", "delete"),
        state=enum("acknowledged", "pending", "inProgress", "completed", "rejected",
                   "failed", "cancelled"),
        product=obj(id={"type": "string"}, href={"type": "string"},
                    productConfiguration=ref("MEFProductConfiguration")),
        itemPrice=ref("Price"), previousBandwidthMbps={"type": "integer"},
        requestedStartDate=INSTANT, requestedEndDate=INSTANT,
        revertOrderId={"type": "string"}, boostOrderId={"type": "string"}),
    "ProductOrder": obj(
        ("id", "state", "productOrderItem"),
        id=ID, href={"type": "string"}, externalId={"type": "string"},
        state=enum("acknowledged", "pending", "inProgress", "completed", "rejected",
                   "failed", "cancelled"),
        idcState={"type": "string"}, orderDate=INSTANT, completionDate=INSTANT,
        stateChangeDate=INSTANT,
        requestId={"type": "string"}, quoteId={"type": "string"},
        productOrderItem=array_of(ref("ProductOrderItem")),
        relatedContactInformation=array_of(ref("RelatedContactInformation")),
        approvals=array_of(obj(("side", "state"), side={"type": "string"},
                               state={"type": "string"}, decideDate=INSTANT)),
        stateChange=array_of(obj(("state", "changeDate"), state={"type": "string"},
                                 changeDate=INSTANT, changeReason={"type": "string"}))),
    "CancelProductOrder_Create": obj(
        ("productOrder",), productOrder=ref("ProductRef"), cancellationReason=TEXT),
    "CancelProductOrder": obj(
        ("id", "state", "productOrder"), id=ID, state=enum("done"),
        cancellationReason={"type": "string"}, productOrder=ref("ProductOrder")),
    # product: the tenant's circuits (inventory), with state and health.
    "Product": obj(
        ("id", "status"), id=ID, href={"type": "string"},
        status=enum("pendingActive", "active", "pendingModify", "pendingTerminate",
                    "terminated", "failed"),
        health=enum("inSync", "driftBeingRepaired", "outOfService"), healthSince=INSTANT,
        startDate=INSTANT, terminationDate=INSTANT, lastUpdate=INSTANT,
        termEndDate=INSTANT, productOrderId={"type": "string"},
        pendingProductOrderId={"type": "string"},
        productConfiguration=ref("MEFProductConfiguration"), productPrice=ref("Price"),
        # a sandbox tenant's circuit (README "Sandbox"): simulated routers, never invoiced
        sandbox={"type": "boolean"}),
}
# A validate-only answer: a productOrder as it would be placed, without the ids of what it
# would create (the order's, and the circuit's for an add).
COMPONENTS["ProductOrderRehearsal"] = {
    **COMPONENTS["ProductOrder"], "required": ["state", "productOrderItem"]}
# The hub's answer to a new subscription: the signing secret, shown this once.
COMPONENTS["EventSubscriptionCreated"] = {
    **COMPONENTS["EventSubscription"],
    "properties": {**COMPONENTS["EventSubscription"]["properties"], "secret": {"type": "string"}},
    "required": ["id", "callback", "query", "secret"]}
