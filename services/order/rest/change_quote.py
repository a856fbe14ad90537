"""A quote for a change to an existing product (a ``quoteItem`` with action ``modify`` or
``delete``): the gRPC PreviewChange as a budgetary Sonata quote, answered at once and not
stored (there is nothing to order by its id; the change is ordered as a productOrder)."""

from __future__ import annotations

from idc.order.v1 import order_service_pb2
from services.common.auth import Role, require_role
from services.order import access, convert
from services.order.rest import sonata
from services.order.rest.body import Body
from services.order.rest.operations import Backend, Reply


def _figures(preview: order_service_pb2.ChangePreview) -> sonata.Json:
    month = preview.proration
    return {
        "effectiveDate": preview.effective_date,
        "currentPrice": sonata.price(preview.current_price),
        "proration": {
            "month": month.month, "daysInMonth": month.days_in_month,
            "currentDays": month.current_days, "currentAmount": sonata.money(month.current_amount),
            "newDays": month.new_days, "newAmount": sonata.money(month.new_amount),
            "total": sonata.money(month.total)},
        "terminationFee": sonata.money(preview.termination_fee),
        "remainingTermMonths": preview.remaining_term_months,
        "termEndDate": preview.term_end_date}


def change_quote(api: Backend, body: Body, item: Body, action: str) -> Reply:
    """The price of ``item``'s change if it took effect today, in ``timeZone`` (IANA; UTC
    when absent), after the checks of the real order."""
    principal = require_role(Role.CUSTOMER)
    product = item.child("product", required=True)
    assert product is not None
    circuit_id = product.text("id", required=True)
    access.require_id(circuit_id, f"{product.path}.id", "circuit")
    time_zone = body.text("timeZone")
    zone = convert.time_zone(time_zone, "timeZone")
    bandwidth, burst = None, None
    if action == "modify":
        configuration = product.child("productConfiguration", required=True)
        assert configuration is not None
        bandwidth = configuration.integer("bandwidthMbps") or 0
        burst = configuration.integer("burstMbps")
    found = api.orders.changing.preview(principal, circuit_id, bandwidth, burst, zone)
    preview = convert.change_preview(found.circuit, found.money_after, found.figures)
    quote_item = {
        "id": item.text("id"), "action": action,
        "product": {"id": circuit_id, "href": f"{sonata.PRODUCT_PATH}/{circuit_id}"},
        "quoteItemPrice": sonata.price(preview.new_price), **_figures(preview)}
    return Reply(sonata.compact({
        "externalId": body.text("externalId"), "quoteLevel": "budgetary",
        "timeZone": time_zone or "UTC", "quoteItem": [quote_item]}), 200)
