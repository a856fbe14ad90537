"""Turning replies into rich tables for people and JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from idc.billing.v1 import invoice_pb2
from idc.order.v1 import capacity_pb2, circuit_pb2, order_pb2
from idc.type.v1 import money_pb2, side_pb2

Renderer = Callable[[Console], None]


@dataclass
class Result:
    """What a command produced: the data (for ``--output json``) and how to show it."""

    data: Any
    render: Renderer = field(default=lambda console: None)
    exit_code: int = 0


def jsonable(data: Any) -> Any:
    """Messages in the proto3 JSON mapping (what grpcurl and ExportInvoice JSON show)."""
    if isinstance(data, Message):
        return MessageToDict(data)
    if isinstance(data, dict):
        return {key: jsonable(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [jsonable(item) for item in data]
    return data


def dumps(data: Any) -> str:
    return json.dumps(jsonable(data), indent=2, sort_keys=False)


def when(ts: Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return ts.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def money(value: money_pb2.Money) -> str:
    return f"{value.currency_code} {value.amount}" if value.amount else ""


def enum_name(enum_type: Any, value: int, prefix: str) -> str:
    """``ORDER_STATE_COMPLETED`` -> ``COMPLETED``; unknown numbers stay numbers."""
    try:
        return str(enum_type.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def side(value: int) -> str:
    return enum_name(side_pb2.Side, value, "SIDE_").title()


def order_state(value: int) -> str:
    return enum_name(order_pb2.OrderState, value, "ORDER_STATE_")


def order_type(value: int) -> str:
    return enum_name(order_pb2.OrderType, value, "ORDER_TYPE_")


def circuit_state(value: int) -> str:
    return enum_name(circuit_pb2.CircuitState, value, "CIRCUIT_STATE_")


def approval_state(value: int) -> str:
    return enum_name(order_pb2.ApprovalState, value, "APPROVAL_STATE_")


def invoice_state(value: int) -> str:
    return enum_name(invoice_pb2.InvoiceState, value, "INVOICE_STATE_")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    grid = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    return grid


def key_values(title: str, pairs: Sequence[tuple[str, Any]]) -> Table:
    grid = Table(title=title, title_justify="left", show_header=False, box=None)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, str(value))
    return grid


def provisioning_step(order: order_pb2.Order) -> str:
    """The last step provisioning reported, e.g. ``preparing since 2026-12-02 10:00:01Z``."""
    return f"{order.provisioning_step} since {when(order.provisioning_step_time)}"


def _schedule(order: order_pb2.Order) -> list[tuple[str, Any]]:
    """A scheduled change's start, a boost's end, price and revert, a revert's boost."""
    rows: list[tuple[str, Any]] = []
    if order.HasField("start_time"):
        rows.append(("starts", when(order.start_time)))
    if order.HasField("end_time"):
        rows.append(("reverts", when(order.end_time)))
    if order.revert_order_id:
        rows.append(("revert order", order.revert_order_id))
    if order.boost_order_id:
        rows.append(("reverts boost", order.boost_order_id))
    if order.price.HasField("boost_price_per_mbps_hour"):
        rows.append(("boost price", f"{money(order.price.boost_price_per_mbps_hour)} "
                                    "per Mbps-hour"))
    if order.price.HasField("boost_estimated_charge"):
        rows.append(("boost estimate", money(order.price.boost_estimated_charge)))
    return rows


def boost_pair(order: order_pb2.Order) -> str:
    """How a boost and its revert are approved: once, on the boost, with both hashes."""
    if order.revert_order_id:
        return f"boost; revert {order.revert_order_id} (--revert-sha256)"
    if order.boost_order_id:
        return f"revert of {order.boost_order_id}"
    return ""


def capacity_timeline(intervals: Sequence[capacity_pb2.CapacityInterval]) -> Table:
    ports = [p.port_id for p in intervals[0].ports] if intervals else []
    return table("Free over time (Mbps)", ["from", "until", "channel", *ports], [
        [when(i.start_time), when(i.end_time), i.channel_free_mbps,
         *(p.free_mbps for p in i.ports)] for i in intervals])


def show_order(console: Console, order: order_pb2.Order) -> None:
    spec = order.spec
    console.print(
        key_values(
            f"Order {order.id}",
            [
                ("type", order_type(order.type)),
                ("state", order_state(order.state)),
                ("tenant", order.tenant_id),
                ("circuit", order.circuit_id),
                ("A-end", f"{spec.a_end_port_id} vlan {spec.a_end_vlan_id}"),
                ("Z-end", f"{spec.z_end_port_id} vlan {spec.z_end_vlan_id}"),
                ("bandwidth", f"{spec.bandwidth_mbps} Mbps (burst {spec.burst_mbps})"),
                ("monthly", money(order.price.mrc)),
                ("one-off", money(order.price.nrc)),
                ("requested by", order.requested_by),
                ("created", when(order.create_time)),
            ]
            + _schedule(order)
            + ([("provisioning step", provisioning_step(order))]
               if order.provisioning_step else [])
            + ([("failure", order.failure.message)] if order.failure.message else []),
        )
    )
    if order.approvals:
        console.print(
            table(
                "Approvals",
                ["side", "telco", "state", "by", "payload sha256", "revert sha256", "comment"],
                [
                    [side(a.side), a.telco_id, approval_state(a.state), a.approver,
                     a.payload_sha256[:16], a.revert_payload_sha256[:16], a.comment]
                    for a in order.approvals
                ],
            )
        )
    if order.audit_trail:
        console.print(
            table(
                "Audit trail",
                ["time", "from", "to", "actor", "reason"],
                [
                    [when(e.time), order_state(e.from_state) if e.from_state else "",
                     order_state(e.to_state), e.actor, e.reason]
                    for e in order.audit_trail
                ],
            )
        )


def orders_table(orders: Sequence[order_pb2.Order]) -> Table:
    return table(
        "Orders",
        ["id", "type", "state", "circuit", "Mbps", "monthly", "created"],
        [
            [o.id, order_type(o.type), order_state(o.state), o.circuit_id,
             o.spec.bandwidth_mbps, money(o.price.mrc), when(o.create_time)]
            for o in orders
        ],
    )


def health(circuit: circuit_pb2.Circuit) -> str:
    """``in sync``, ``drift being repaired`` or ``out of service``, with since when."""
    if circuit.health == circuit_pb2.CIRCUIT_HEALTH_UNSPECIFIED:
        return ""
    words = enum_name(circuit_pb2.CircuitHealth, circuit.health, "CIRCUIT_HEALTH_")
    since = when(circuit.health_since)
    return words.lower().replace("_", " ") + (f" since {since}" if since else "")


def circuits_table(circuits: Sequence[circuit_pb2.Circuit]) -> Table:
    return table(
        "Circuits",
        ["id", "state", "A-end", "Z-end", "Mbps", "monthly", "active since", "health"],
        [
            [c.id, circuit_state(c.state),
             f"{c.a_end.port_id}.{c.a_end.vlan_id}", f"{c.z_end.port_id}.{c.z_end.vlan_id}",
             c.bandwidth_mbps, money(c.price.mrc), when(c.activate_time), health(c)]
            for c in circuits
        ],
    )


def invoices_table(invoices: Sequence[invoice_pb2.Invoice]) -> Table:
    return table(
        "Invoices",
        ["id", "number", "tenant", "month", "state", "total"],
        [
            [i.id, i.number, i.tenant_id, f"{i.month.year}-{i.month.month:02d}",
             invoice_state(i.state), money(i.total)]
            for i in invoices
        ],
    )


def _quantity(line: invoice_pb2.InvoiceLine) -> str:
    """Days of the month, or a boost's started hours."""
    if line.HasField("boost"):
        return f"{line.boost.started_hours} h"
    return f"{line.days_covered}/{line.days_in_month}" if line.days_in_month else ""


def show_invoice(console: Console, invoice: invoice_pb2.Invoice) -> None:
    console.print(
        key_values(
            f"Invoice {invoice.number or invoice.id}",
            [
                ("id", invoice.id),
                ("tenant", invoice.tenant_id),
                ("issued by", invoice.billing_entity_id),
                ("month", f"{invoice.month.year}-{invoice.month.month:02d} ({invoice.time_zone})"),
                ("state", invoice_state(invoice.state)),
                ("due", invoice.due_date or "(set on finalisation)"),
            ],
        )
    )
    console.print(
        table(
            "Lines",
            ["kind", "circuit", "description", "days/hours", "Mbps", "amount"],
            [
                [enum_name(invoice_pb2.InvoiceLineKind, line.kind, "INVOICE_LINE_KIND_"),
                 line.circuit_id, line.description,
                 _quantity(line),
                 line.bandwidth_mbps or "", money(line.amount)]
                for line in invoice.lines
            ],
        )
    )
    console.print(
        key_values(
            "",
            [
                ("subtotal", money(invoice.subtotal)),
                (f"tax ({invoice.tax_rate})", money(invoice.tax)),
                ("total", money(invoice.total)),
            ],
        )
    )
    if invoice.HasField("credit_balance"):
        balance = invoice.credit_balance
        console.print(key_values("Credit balance", [
            ("brought forward", money(balance.brought_forward)),
            ("credit notes", f"{money(balance.credits)} ({len(balance.credit_note_ids)})"),
            ("applied", money(balance.applied)),
            ("amount due", money(balance.amount_due)),
            ("carried forward", money(balance.carried_forward)),
        ]))
