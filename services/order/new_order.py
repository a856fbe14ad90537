"""The one builder of a new order, whatever its type: the order's row, its two pending
approvals and its first audit entries, as placed (PENDING_APPROVAL, waiting for both
telcos); and the OrderCreated event that announces it.

NEW orders are admitted in batches and written with plain INSERTs (services/order/placing.py);
CHANGE and DISCONNECT orders are added to the session of their transaction
(services/order/changing.py). Both start from these rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from idc.events.v1 import order_pb2 as order_events
from services.order import convert
from services.order.contacts import SealedContacts
from services.order.domain.catalogue import Catalogue, Side
from services.order.domain.lifecycle import ApprovalState, OrderState, OrderType, check_transition
from services.order.domain.pricing import PriceTerms
from services.order.tables import OrderRow

ORDERED = {OrderType.NEW: "new circuit", OrderType.CHANGE: "bandwidth change",
           OrderType.DISCONNECT: "disconnect"}


@dataclass(frozen=True)
class NewOrder:
    order_id: str
    order_type: OrderType
    circuit_id: str
    requested_by: str
    request_id: str
    fingerprint: str
    quote_id: str | None
    # The circuit's columns the order carries: tenant, ports, VLANs, bandwidth, burst and
    # the customer's references (see ``circuit_shape``).
    shape: Mapping[str, Any]
    # The price terms (see ``price_columns``).
    money: Mapping[str, Any]
    previous_bandwidth_mbps: int
    reserved_mbps: int
    contacts: SealedContacts
    moment: datetime
    approval_expire_at: datetime


@dataclass(frozen=True)
class OrderRecords:
    """Column values by table, as GetOrder reads them back."""

    order: dict[str, Any]
    approvals: list[dict[str, Any]]
    audit: list[dict[str, Any]]


def price_columns(terms: PriceTerms) -> dict[str, Any]:
    return {"currency": terms.currency, "mrc": str(terms.mrc), "nrc": str(terms.nrc),
            "burst_price": str(terms.burst_price_per_mbps), "term_months": terms.term_months,
            "price_book_version": terms.price_book_version,
            "termination_share": str(terms.termination_share)}


def circuit_shape(tenant: str, a_port_id: str, z_port_id: str, a_vlan: int, z_vlan: int,
                  bandwidth_mbps: int, burst_mbps: int, customer_reference: str,
                  purchase_order: str, description: str) -> dict[str, Any]:
    return {"tenant_id": tenant, "a_port_id": a_port_id, "z_port_id": z_port_id,
            "a_vlan": a_vlan, "z_vlan": z_vlan, "bandwidth_mbps": bandwidth_mbps,
            "burst_mbps": burst_mbps, "customer_reference": customer_reference,
            "purchase_order": purchase_order, "description": description}


def order_records(new: NewOrder, catalogue: Catalogue) -> OrderRecords:
    """The order is created ACKNOWLEDGED (version 1) and moved on at once to
    PENDING_APPROVAL (version 2): both moves are in its audit trail."""
    check_transition(OrderState.ACKNOWLEDGED, OrderState.PENDING_APPROVAL, new.order_id)
    moment = new.moment
    order: dict[str, Any] = {
        "id": new.order_id, "type": new.order_type.value,
        "state": OrderState.PENDING_APPROVAL.value, "circuit_id": new.circuit_id,
        "request_id": new.request_id, "request_hash": new.fingerprint,
        "quote_id": new.quote_id, "requested_by": new.requested_by,
        "previous_bandwidth_mbps": new.previous_bandwidth_mbps,
        "reserved_mbps": new.reserved_mbps, **new.contacts.columns(), "failure": None,
        "plan_error": None, "approval_expire_at": new.approval_expire_at,
        "created_at": moment, "updated_at": moment, "completed_at": None,
        "approved_at": None, "provisioning_step": None, "provisioning_step_at": None,
        "version": 2, **new.shape, **new.money}
    approvals = [
        {"order_id": new.order_id, "side": side.value,
         "telco_id": catalogue.telco_for_side(side).id,
         "state": ApprovalState.PENDING.value, "approver": "", "payload_sha256": "",
         "comment": "", "decided_at": None}
        for side in sorted(Side, key=lambda side: side.value)]
    audit = [
        {"order_id": new.order_id, "at": moment, "actor": new.requested_by,
         "reason": f"{ORDERED[new.order_type]} ordered; capacity and VLANs reserved",
         "from_state": None, "to_state": OrderState.ACKNOWLEDGED.value},
        {"order_id": new.order_id, "at": moment, "actor": new.requested_by,
         "reason": "waiting for approval by both telcos",
         "from_state": OrderState.ACKNOWLEDGED.value,
         "to_state": OrderState.PENDING_APPROVAL.value}]
    return OrderRecords(order, approvals, audit)


def order_created(catalogue: Catalogue, order: OrderRow) -> order_events.OrderCreated:
    return order_events.OrderCreated(
        event_id=str(uuid.uuid4()), occurred_at=convert.timestamp(order.created_at),
        order_id=order.id, operation=convert.OPERATION[OrderType(order.type)],
        circuit=convert.circuit_parameters(catalogue, order, order.circuit_id,
                                           order.bandwidth_mbps, order.burst_mbps),
        previous_bandwidth_mbps=order.previous_bandwidth_mbps,
        price=convert.price_terms(order),
        approval_expire_time=convert.timestamp(order.approval_expire_at))
