"""Rows and domain values to and from the protobuf contracts (idc.order.v1, idc.events.v1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session

from idc.events.v1 import common_pb2
from idc.order.v1 import (
    capacity_pb2,
    circuit_pb2,
    order_pb2,
    order_service_pb2,
    price_pb2,
    quote_pb2,
)
from idc.type.v1 import circuit_operation_pb2, money_pb2, side_pb2
from services.common.errors import InvalidArgument
from services.common.limits import identifier_description
from services.order import store
from services.order.domain.catalogue import Catalogue, Side
from services.order.domain.health import Health
from services.order.domain.lifecycle import (
    COMMITTED_CIRCUIT_STATES,
    CircuitState,
    OrderState,
    OrderType,
)
from services.order.domain.preview import ChangePreview, add_months
from services.order.domain.pricing import boost_charge
from services.order.domain.schedule import Interval
from services.order.domain.validation import CircuitRequest, ContactInfo
from services.order.tables import ApprovalDecisionRow, CircuitRow, OrderRow, QuoteRow

OPERATION = {
    OrderType.NEW: circuit_operation_pb2.CIRCUIT_OPERATION_CREATE,
    OrderType.CHANGE: circuit_operation_pb2.CIRCUIT_OPERATION_MODIFY,
    OrderType.DISCONNECT: circuit_operation_pb2.CIRCUIT_OPERATION_DELETE,
}


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def side_proto(side: str) -> side_pb2.Side.ValueType:
    return side_pb2.Side.Value(f"SIDE_{side}")


def side_from_proto(value: int) -> Side | None:
    """None for UNSPECIFIED; InvalidArgument for a number the contract does not define."""
    if value == side_pb2.SIDE_UNSPECIFIED:
        return None
    if value not in side_pb2.Side.values():
        raise InvalidArgument.for_field("side", f"{value} is not a known side")
    return Side(side_pb2.Side.Name(side_pb2.Side.ValueType(value)).removeprefix("SIDE_"))


def order_state_proto(state: str | None) -> order_pb2.OrderState.ValueType:
    if state is None:
        return order_pb2.ORDER_STATE_UNSPECIFIED
    return order_pb2.OrderState.Value(f"ORDER_STATE_{state}")


def order_states_from_proto(values: list[int], field: str) -> list[OrderState]:
    states = []
    for value in values:
        if value not in order_pb2.OrderState.values() or value == 0:
            raise InvalidArgument.for_field(field, f"{value} is not a known order state")
        states.append(OrderState(order_pb2.OrderState.Name(order_pb2.OrderState.ValueType(value)).removeprefix("ORDER_STATE_")))
    return states


def order_type_from_proto(value: int, field: str) -> OrderType | None:
    if value == order_pb2.ORDER_TYPE_UNSPECIFIED:
        return None
    if value not in order_pb2.OrderType.values():
        raise InvalidArgument.for_field(field, f"{value} is not a known order type")
    name = order_pb2.OrderType.Name(order_pb2.OrderType.ValueType(value))
    return OrderType(name.removeprefix("ORDER_TYPE_"))


def circuit_states_from_proto(values: list[int], field: str) -> list[CircuitState]:
    states = []
    for value in values:
        if value not in circuit_pb2.CircuitState.values() or value == 0:
            raise InvalidArgument.for_field(field, f"{value} is not a known circuit state")
        states.append(
            CircuitState(circuit_pb2.CircuitState.Name(
                circuit_pb2.CircuitState.ValueType(value)).removeprefix("CIRCUIT_STATE_"))
        )
    return states


def circuit_request(spec: circuit_pb2.CircuitSpec) -> CircuitRequest:
    return CircuitRequest(
        a_end_port_id=spec.a_end_port_id,
        z_end_port_id=spec.z_end_port_id,
        a_end_vlan_id=spec.a_end_vlan_id if spec.HasField("a_end_vlan_id") else None,
        z_end_vlan_id=spec.z_end_vlan_id if spec.HasField("z_end_vlan_id") else None,
        bandwidth_mbps=spec.bandwidth_mbps,
        burst_mbps=spec.burst_mbps,
        term_months=spec.term_months,
        currency=spec.currency_code,
        customer_reference=spec.customer_reference,
        description=spec.description,
        purchase_order=spec.purchase_order,
    )


def contacts(values: list[order_pb2.Contact]) -> list[ContactInfo]:
    return [ContactInfo(c.role, c.name, c.email, c.phone) for c in values]


def money(currency: str, amount: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount=amount)


def price(row: OrderRow | CircuitRow | QuoteRow) -> price_pb2.Price:
    return price_pb2.Price(
        currency_code=row.currency,
        mrc=money(row.currency, row.mrc),
        nrc=money(row.currency, row.nrc),
        burst_price_per_mbps=money(row.currency, row.burst_price),
        term_months=row.term_months,
        price_book_version=row.price_book_version,
        termination_share=row.termination_share,
    )


MAX_TIME_ZONE_LENGTH = 64


def time_zone(name: str, field: str) -> ZoneInfo:
    """An IANA time zone; empty is UTC."""
    try:
        if len(name) <= MAX_TIME_ZONE_LENGTH:
            return ZoneInfo(name or "UTC")
    except (ValueError, KeyError, OSError):
        pass
    raise InvalidArgument.for_field(
        field, f"{name[:MAX_TIME_ZONE_LENGTH]!r} is not an IANA time zone such as "
        "'Asia/Singapore'")


def change_preview(circuit: CircuitRow, money_after: Mapping[str, Any],
                   figures: ChangePreview) -> order_service_pb2.ChangePreview:
    def amount(value: Decimal) -> money_pb2.Money:
        return money(circuit.currency, f"{value:f}")

    month = figures.proration
    return order_service_pb2.ChangePreview(
        circuit_id=circuit.id, current_price=price(circuit),
        new_price=price(CircuitRow(**money_after)),  # a transient row for the converter
        effective_date=figures.effective.isoformat(),
        proration=order_service_pb2.MonthProration(
            month=month.month, days_in_month=month.days_in_month,
            current_days=month.current_days, current_amount=amount(month.current_amount),
            new_days=month.new_days, new_amount=amount(month.new_amount),
            total=amount(month.total)),
        termination_fee=amount(figures.termination_fee),
        remaining_term_months=figures.remaining_term_months,
        term_end_date=figures.term_end.isoformat())


def quote(spec: circuit_pb2.CircuitSpec, row: QuoteRow, reasons: list[str],
          figures: store.CapacityFigures, *, sandbox: bool = False) -> quote_pb2.Quote:
    """The quote placing stored for ``spec``, with its feasibility and headroom (of the
    sandbox pool for a ``sandbox`` spec)."""
    return quote_pb2.Quote(
        id=row.id, tenant_id=row.tenant_id, spec=spec, price=price(row),
        create_time=timestamp(row.created_at), expire_time=timestamp(row.expire_at),
        feasible=not reasons, infeasible_reasons=reasons,
        channel_free_mbps=figures.channels.of(sandbox).free_mbps,
        a_end_port_free_mbps=figures.ports[spec.a_end_port_id].free_mbps,
        z_end_port_free_mbps=figures.ports[spec.z_end_port_id].free_mbps)


def price_terms(row: OrderRow | CircuitRow) -> common_pb2.PriceTerms:
    return common_pb2.PriceTerms(
        currency_code=row.currency,
        mrc=money(row.currency, row.mrc),
        nrc=money(row.currency, row.nrc),
        burst_price_per_mbps=money(row.currency, row.burst_price),
        term_months=row.term_months,
        price_book_version=row.price_book_version,
        # Billing prints it on the invoice; validated to a number's shape on order.
        purchase_order=row.purchase_order,
        termination_share=row.termination_share,
        boost_price_per_mbps_hour=(money(row.currency, row.boost_price)
                                   if isinstance(row, OrderRow) and row.boost_price else None),
    )


def boost(boost_id: str, base_mbps: int, boosted_mbps: int, start: datetime,
          end: datetime, *, revert: bool) -> common_pb2.Boost:
    return common_pb2.Boost(boost_id=boost_id, base_bandwidth_mbps=base_mbps,
                            boosted_bandwidth_mbps=boosted_mbps, start_time=timestamp(start),
                            end_time=timestamp(end), revert=revert)


def _boost_price(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A boost's price per Mbps-hour and, on the boost itself, its estimated charge."""
    if not row.get("boost_price"):
        return {}
    currency, unit = row["currency"], Decimal(row["boost_price"])
    found = {"boost_price_per_mbps_hour": money(currency, row["boost_price"])}
    if row["revert_order_id"] and row["start_at"] and row["end_at"]:
        charge = boost_charge(unit, row["bandwidth_mbps"] - row["previous_bandwidth_mbps"],
                              row["start_at"], row["end_at"])
        found["boost_estimated_charge"] = money(currency, str(charge))
    return found


def capacity_interval(interval: Interval) -> capacity_pb2.CapacityInterval:
    return capacity_pb2.CapacityInterval(
        start_time=timestamp(interval.start), end_time=timestamp(interval.end),
        channel_free_mbps=interval.channel_free_mbps,
        ports=[capacity_pb2.PortFree(port_id=port_id, free_mbps=free)
               for port_id, free in interval.port_free_mbps.items()])


def audit_entry(row: Mapping[Any, Any]) -> order_pb2.AuditEntry:
    return order_pb2.AuditEntry(
        time=timestamp(row["at"]), actor=row["actor"], reason=row["reason"],
        from_state=order_state_proto(row["from_state"]),
        to_state=order_state_proto(row["to_state"]),
    )


def order(session: Session, row: OrderRow) -> order_pb2.Order:
    """The order as the API shows it, with its approvals and audit trail as they stand in
    ``session`` (pending changes are flushed first)."""
    session.flush()
    return order_message(*store.order_with_history(session, row.id, None))


def order_by_id(session: Session, order_id: str, tenant: str | None) -> order_pb2.Order:
    """The order (NotFound when missing or another tenant's), read in one statement."""
    return order_message(*store.order_with_history(session, order_id, tenant))


def order_message(row: Mapping[Any, Any], approvals: Sequence[Mapping[Any, Any]],
                  audit: Sequence[Mapping[Any, Any]]) -> order_pb2.Order:
    """An order from its column values (``orders``), approvals sorted by side and audit
    entries in the order they were written; without its contacts, which only
    services.order.disclosure opens, for the principals allowed to read them."""
    currency = row["currency"]
    message = order_pb2.Order(
        id=row["id"],
        tenant_id=row["tenant_id"],
        type=order_pb2.OrderType.Value(f"ORDER_TYPE_{row['type']}"),
        state=order_state_proto(row["state"]),
        circuit_id=row["circuit_id"],
        spec=circuit_pb2.CircuitSpec(
            a_end_port_id=row["a_port_id"], z_end_port_id=row["z_port_id"],
            a_end_vlan_id=row["a_vlan"], z_end_vlan_id=row["z_vlan"],
            bandwidth_mbps=row["bandwidth_mbps"], burst_mbps=row["burst_mbps"],
            term_months=row["term_months"], currency_code=currency,
            customer_reference=row["customer_reference"], description=row["description"],
            purchase_order=row["purchase_order"]),
        previous_bandwidth_mbps=row["previous_bandwidth_mbps"],
        price=price_pb2.Price(
            currency_code=currency, mrc=money(currency, row["mrc"]),
            nrc=money(currency, row["nrc"]),
            burst_price_per_mbps=money(currency, row["burst_price"]),
            term_months=row["term_months"], price_book_version=row["price_book_version"],
            termination_share=row["termination_share"], **_boost_price(row)),
        quote_id=row["quote_id"] or "",
        request_id=row["request_id"],
        requested_by=row["requested_by"],
        create_time=timestamp(row["created_at"]),
        update_time=timestamp(row["updated_at"]),
        complete_time=timestamp(row["completed_at"]),
        provisioning_step=row["provisioning_step"] or "",
        provisioning_step_time=timestamp(row["provisioning_step_at"]),
        # Absent from the rows of a NEW order built in memory (placing).
        start_time=timestamp(row.get("start_at")), end_time=timestamp(row.get("end_at")),
        revert_order_id=row.get("revert_order_id") or "",
        boost_order_id=row.get("boost_order_id") or "",
    )
    expire_time = timestamp(row["approval_expire_at"])
    for approval in approvals:
        message.approvals.append(order_pb2.Approval(
            side=side_proto(approval["side"]),
            telco_id=approval["telco_id"],
            state=order_pb2.ApprovalState.Value(f"APPROVAL_STATE_{approval['state']}"),
            approver=approval["approver"],
            payload_sha256=approval["payload_sha256"],
            comment=approval["comment"],
            decide_time=timestamp(approval["decided_at"]),
            expire_time=expire_time,
            revert_payload_sha256=approval.get("revert_payload_sha256") or "",
        ))
    message.audit_trail.extend(audit_entry(a) for a in audit)
    if row["failure"]:
        message.failure.ParseFromString(row["failure"])
    return message


def approval_decision(row: ApprovalDecisionRow) -> order_pb2.Approval:
    """One entry of an order's approval history."""
    return order_pb2.Approval(
        side=side_proto(row.side), telco_id=row.telco_id,
        state=order_pb2.ApprovalState.Value(f"APPROVAL_STATE_{row.state}"),
        approver=row.approver, payload_sha256=row.payload_sha256, comment=row.comment,
        decide_time=timestamp(row.decided_at))


def circuit_end(catalogue: Catalogue, port_id: str, vlan: int) -> circuit_pb2.CircuitEnd:
    port = catalogue.ports[port_id]
    site = catalogue.site_of(port)
    return circuit_pb2.CircuitEnd(
        side=side_proto(site.side), site_id=site.id, port_id=port.id, port_name=port.name,
        router_name=site.router, vlan_id=vlan,
    )


def circuit(catalogue: Catalogue, row: CircuitRow) -> circuit_pb2.Circuit:
    term_end = None if row.activated_at is None else add_months(row.activated_at,
                                                                row.term_months)
    return circuit_pb2.Circuit(
        id=row.id,
        tenant_id=row.tenant_id,
        state=circuit_pb2.CircuitState.Value(f"CIRCUIT_STATE_{row.state}"),
        a_end=circuit_end(catalogue, row.a_port_id, row.a_vlan),
        z_end=circuit_end(catalogue, row.z_port_id, row.z_vlan),
        bandwidth_mbps=row.bandwidth_mbps,
        burst_mbps=row.burst_mbps,
        term_months=row.term_months,
        customer_reference=row.customer_reference,
        description=row.description,
        purchase_order=row.purchase_order,
        price=price(row),
        created_by_order_id=row.created_by_order_id,
        pending_order_id=row.pending_order_id or "",
        create_time=timestamp(row.created_at),
        activate_time=timestamp(row.activated_at),
        update_time=timestamp(row.updated_at),
        disconnect_time=timestamp(row.disconnected_at),
        term_end_time=timestamp(term_end),
        sandbox=catalogue.is_sandbox_port(row.a_port_id),
        **_health(row),
    )


HEALTH_PROTO = {
    Health.IN_SYNC: circuit_pb2.CIRCUIT_HEALTH_IN_SYNC,
    Health.DRIFT_BEING_REPAIRED: circuit_pb2.CIRCUIT_HEALTH_DRIFT_BEING_REPAIRED,
    Health.OUT_OF_SERVICE: circuit_pb2.CIRCUIT_HEALTH_OUT_OF_SERVICE,
}


def _health(row: CircuitRow) -> dict[str, Any]:
    """Health only while the routers are meant to carry the circuit (the drift watch
    checks those); in sync since the last drift cleared, or since activation."""
    if row.state not in COMMITTED_CIRCUIT_STATES:
        return {}
    return {"health": HEALTH_PROTO[Health(row.health or "")],
            "health_since": timestamp(row.health_since or row.activated_at)}


def endpoint(catalogue: Catalogue, port_id: str, vlan: int) -> common_pb2.CircuitEndpoint:
    port = catalogue.ports[port_id]
    site = catalogue.site_of(port)
    return common_pb2.CircuitEndpoint(
        side=side_proto(site.side), telco_id=site.telco.id, site_id=site.id,
        router_name=site.router, port_id=port.id, interface_name=port.name, vlan_id=vlan,
    )


def circuit_parameters(catalogue: Catalogue, row: OrderRow | CircuitRow, circuit_id: str,
                       bandwidth_mbps: int, burst_mbps: int) -> common_pb2.CircuitParameters:
    """What the routers need: ids and technical values; never contacts, the reference or
    the customer's description (the description is built from ids)."""
    return common_pb2.CircuitParameters(
        circuit_id=circuit_id,
        tenant_id=row.tenant_id,
        a_end=endpoint(catalogue, row.a_port_id, row.a_vlan),
        z_end=endpoint(catalogue, row.z_port_id, row.z_vlan),
        bandwidth_mbps=bandwidth_mbps,
        burst_mbps=burst_mbps,
        description=identifier_description(row.tenant_id),
        sandbox=catalogue.is_sandbox_port(row.a_port_id),
    )
