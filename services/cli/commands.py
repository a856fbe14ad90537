"""What each idcctl subcommand does: one request, one reply, one rendering."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.syntax import Syntax

from idc.billing.v1 import billing_service_pb2 as billing_pb
from idc.billing.v1 import invoice_pb2
from idc.ops.v1 import approval_service_pb2 as ops_pb
from idc.order.v1 import circuit_pb2, order_pb2
from idc.order.v1 import order_service_pb2 as order_pb
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from idc.type.v1 import router_payload_pb2, side_pb2, time_range_pb2, year_month_pb2
from services.cli import render
from services.cli.client import Api
from services.cli.errors import CliError, ExitCode
from services.cli.render import Result
from services.common import db
from services.common.config import ServiceSettings
from services.common.order_watch import watch_order
from services.common.service_table import ORDER
from services.order.contacts import ContactCipher, load_key_set
from services.order.disclosure import reencrypt, sealed_per_key


@dataclass
class Context:
    api: Api
    console: Console
    json_output: bool


Command = Callable[[Context, argparse.Namespace], Result]

SIDES: dict[str, side_pb2.Side.ValueType] = {
    "sg": side_pb2.SIDE_SINGAPORE,
    "cq": side_pb2.SIDE_CHONGQING,
}
TERMINAL_ORDER_STATES = {
    order_pb2.ORDER_STATE_COMPLETED,
    order_pb2.ORDER_STATE_REJECTED,
    order_pb2.ORDER_STATE_FAILED,
    order_pb2.ORDER_STATE_CANCELLED,
}
EXPORT_FORMATS = {
    "pdf": billing_pb.EXPORT_FORMAT_PDF,
    "csv": billing_pb.EXPORT_FORMAT_CSV,
    "json": billing_pb.EXPORT_FORMAT_JSON,
}


# -- argument parsing helpers ---------------------------------------------------------


def year_month(raw: str) -> year_month_pb2.YearMonth:
    """``YYYY-MM`` as a YearMonth (argparse type)."""
    try:
        moment = datetime.strptime(raw, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a month like 2026-05") from None
    return year_month_pb2.YearMonth(year=moment.year, month=moment.month)


def last_month() -> year_month_pb2.YearMonth:
    """The month before this one (UTC): on the 1st, the month that just ended."""
    now = datetime.now(UTC)
    year, month = (now.year - 1, 12) if now.month == 1 else (now.year, now.month - 1)
    return year_month_pb2.YearMonth(year=year, month=month)


def moment(raw: str) -> datetime:
    """An ISO 8601 time (UTC when no offset is given), or an age: ``30m``, ``2h``, ``1d``."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if raw[-1:] in units and raw[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[raw[-1]]: int(raw[:-1])})
    return _iso(raw, "use ISO 8601 (2026-05-01T00:00) or an age (30m, 2h, 1d)")


def iso_time(raw: str) -> datetime:
    """An ISO 8601 time (UTC when no offset is given): a start or end ahead."""
    return _iso(raw, "use ISO 8601 (2026-05-01T09:00, 2026-05-01T09:00+08:00)")


def _iso(raw: str, hint: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a time: {hint}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def contact(raw: str) -> order_pb2.Contact:
    """``role,name,email,phone`` as a Contact (argparse type)."""
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: a contact is role,name,email,phone "
            "(e.g. technical,Ann Lee,ann@acme.sg,+6561234567)"
        )
    return order_pb2.Contact(role=parts[0], name=parts[1], email=parts[2], phone=parts[3])


def _side(args: argparse.Namespace) -> side_pb2.Side.ValueType:
    return SIDES.get(args.side or "", side_pb2.SIDE_UNSPECIFIED)


def request_id(args: argparse.Namespace) -> str:
    return str(args.request_id or uuid.uuid4())


# -- customer ---------------------------------------------------------------------------


def sites(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order",
        ctx.api.orders.ListSites,
        order_pb.ListSitesRequest(side=_side(args), page_size=1000),
    )

    def show(console: Console) -> None:
        console.print(
            render.table(
                "Sites and ports",
                ["site", "side", "router", "port id", "speed Mbps", "free Mbps", "free VLANs"],
                [
                    [s.id, render.side(s.side), s.router_name, p.id, p.speed_mbps,
                     p.free_mbps, p.free_vlan_count]
                    for s in reply.sites
                    for p in s.ports
                ],
            )
        )

    return Result(reply, show)


def _spec(args: argparse.Namespace) -> circuit_pb2.CircuitSpec:
    spec = circuit_pb2.CircuitSpec(
        a_end_port_id=args.a_end or "",
        z_end_port_id=args.z_end or "",
        bandwidth_mbps=args.bandwidth or 0,
        burst_mbps=args.burst,
        term_months=args.term,
        currency_code=args.currency,
        customer_reference=args.reference,
        description=args.description,
        purchase_order=args.purchase_order,
    )
    if args.a_vlan is not None:
        spec.a_end_vlan_id = args.a_vlan
    if args.z_vlan is not None:
        spec.z_end_vlan_id = args.z_vlan
    return spec


def quote(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order", ctx.api.orders.GetQuote, order_pb.GetQuoteRequest(spec=_spec(args))
    )
    q = reply.quote

    def show(console: Console) -> None:
        console.print(
            render.key_values(
                f"Quote {q.id}",
                [
                    ("A-end", q.spec.a_end_port_id),
                    ("Z-end", q.spec.z_end_port_id),
                    ("bandwidth", f"{q.spec.bandwidth_mbps} Mbps, {q.spec.term_months} months"),
                    ("monthly", render.money(q.price.mrc)),
                    ("one-off", render.money(q.price.nrc)),
                    ("burst per Mbps", render.money(q.price.burst_price_per_mbps)),
                    ("fits now", "yes" if q.feasible else "no: " + "; ".join(q.infeasible_reasons)),
                    ("channel free", f"{q.channel_free_mbps} Mbps"),
                    ("valid until", render.when(q.expire_time)),
                ],
            )
        )

    return Result(reply, show)


def place_order(ctx: Context, args: argparse.Namespace) -> Result:
    request = order_pb.CreateOrderRequest(request_id=request_id(args), contacts=args.contact,
                                          validate_only=args.validate_only)
    if args.quote:
        request.quote_id = args.quote
    else:
        request.spec.CopyFrom(_spec(args))
    reply = ctx.api.call("order", ctx.api.orders.CreateOrder, request)
    return _order_result(reply, reply.order, args)


def orders(ctx: Context, args: argparse.Namespace) -> Result:
    if args.order_id:
        one = ctx.api.call(
            "order", ctx.api.orders.GetOrder, order_pb.GetOrderRequest(order_id=args.order_id)
        )
        return Result(one, lambda console: render.show_order(console, one.order))
    request = order_pb.ListOrdersRequest(
        page_size=args.limit,
        states=[order_pb2.OrderState.Value(f"ORDER_STATE_{s}") for s in args.state],
        circuit_id=args.circuit or "",
        tenant_id=args.tenant or "",
    )
    reply = ctx.api.call("order", ctx.api.orders.ListOrders, request)
    return Result(reply, lambda console: console.print(render.orders_table(reply.orders)))


def watch(ctx: Context, args: argparse.Namespace) -> Result:
    """Prints every change of the order until it ends; exit 0 only if it COMPLETED."""
    last = order_pb2.Order()
    ends_at = time.monotonic() + args.timeout

    def open_stream() -> Iterator[order_pb.WatchOrderResponse]:
        # The server ends a stream after its lifetime; --timeout bounds all of them.
        return ctx.api.stream(
            "order",
            ctx.api.orders.WatchOrder,
            order_pb.WatchOrderRequest(order_id=args.order_id),
            timeout_s=max(0.001, ends_at - time.monotonic()),
        )

    for message in watch_order(open_stream):
        last = message.order
        if ctx.json_output:
            print(json.dumps(render.jsonable(message)), file=ctx.console.file, flush=True)
        elif message.HasField("change"):
            change = message.change
            ctx.console.print(
                f"{render.when(change.time)}  {render.order_state(change.from_state)} -> "
                f"[bold]{render.order_state(change.to_state)}[/bold]  "
                f"{change.actor}: {change.reason}"
            )
        else:
            step = f", step {render.provisioning_step(last)}" if last.provisioning_step else ""
            ctx.console.print(
                f"order {last.id} ({render.order_type(last.type)}) is "
                f"[bold]{render.order_state(last.state)}[/bold]{step}"
            )
    completed = last.state == order_pb2.ORDER_STATE_COMPLETED
    if not completed and not ctx.json_output:
        reason = last.failure.message or (last.audit_trail[-1].reason if last.audit_trail else "")
        ctx.console.print(f"order ended {render.order_state(last.state)}: {reason}")
    return Result(None, exit_code=ExitCode.OK if completed else ExitCode.ORDER_NOT_COMPLETED)


def cancel(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order",
        ctx.api.orders.CancelOrder,
        order_pb.CancelOrderRequest(order_id=args.order_id, reason=args.reason),
    )
    return Result(reply, lambda console: render.show_order(console, reply.order))


def circuits(ctx: Context, args: argparse.Namespace) -> Result:
    if args.circuit_id:
        one = ctx.api.call(
            "order",
            ctx.api.orders.GetCircuit,
            order_pb.GetCircuitRequest(circuit_id=args.circuit_id),
        )
        return Result(one, lambda console: console.print(render.circuits_table([one.circuit])))
    request = order_pb.ListCircuitsRequest(
        page_size=args.limit,
        states=[circuit_pb2.CircuitState.Value(f"CIRCUIT_STATE_{s}") for s in args.state],
        tenant_id=args.tenant or "",
    )
    reply = ctx.api.call("order", ctx.api.orders.ListCircuits, request)
    return Result(reply, lambda console: console.print(render.circuits_table(reply.circuits)))


def modify(ctx: Context, args: argparse.Namespace) -> Result:
    request = order_pb.ModifyBandwidthRequest(
        request_id=request_id(args),
        circuit_id=args.circuit_id,
        bandwidth_mbps=args.bandwidth,
        reason=args.reason,
        validate_only=args.validate_only,
    )
    if args.burst is not None:
        request.burst_mbps = args.burst
    if args.start is not None:
        request.start_time.CopyFrom(timestamp(args.start))
    if args.end is not None:
        request.end_time.CopyFrom(timestamp(args.end))
    reply = ctx.api.call("order", ctx.api.orders.ModifyBandwidth, request)
    return _order_result(reply, reply.order, args)


def disconnect(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order",
        ctx.api.orders.DisconnectCircuit,
        order_pb.DisconnectCircuitRequest(
            request_id=request_id(args), circuit_id=args.circuit_id, reason=args.reason,
            validate_only=args.validate_only,
        ),
    )
    return _order_result(reply, reply.order, args)


VALIDATED_ONLY = (
    "[yellow]validate only:[/yellow] every check passed; nothing was stored, reserved or "
    "sent for approval (the request id is still unused)"
)


def _order_result(reply: Message, order: order_pb2.Order, args: argparse.Namespace) -> Result:
    def show(console: Console) -> None:
        render.show_order(console, order)
        if args.validate_only:
            console.print(VALIDATED_ONLY)

    return Result(reply, show)


def usage(ctx: Context, args: argparse.Namespace) -> Result:
    until = args.until or datetime.now(UTC)
    since = args.since or until - timedelta(days=1)
    reply = ctx.api.call(
        "billing",
        ctx.api.billing.GetUsage,
        billing_pb.GetUsageRequest(
            circuit_id=args.circuit_id,
            range=time_range_pb2.TimeRange(start_time=timestamp(since), end_time=timestamp(until)),
            include_samples=args.samples,
        ),
    )

    def show(console: Console) -> None:
        s = reply.summary
        console.print(
            render.key_values(
                f"Usage of {reply.circuit_id}",
                [
                    ("from", render.when(reply.range.start_time)),
                    ("until", render.when(reply.range.end_time)),
                    ("samples", f"{s.samples_present} present of {s.samples_expected} expected, "
                                f"{s.samples_discarded} discarded"),
                    ("95th pct in", f"{s.p95_in_mbps} Mbps"),
                    ("95th pct out", f"{s.p95_out_mbps} Mbps"),
                    ("billable", f"{s.billable_mbps} Mbps"),
                ],
            )
        )
        if reply.samples:
            console.print(
                render.table(
                    "Samples",
                    ["interval start", "seconds", "bytes in", "bytes out", "valid"],
                    [
                        [render.when(i.interval_start_time), i.interval_seconds, i.bytes_in,
                         i.bytes_out, "yes" if i.valid else "no"]
                        for i in reply.samples
                    ],
                )
            )

    return Result(reply, show)


# -- invoices (customers and the billing team) ------------------------------------------


def invoices(ctx: Context, args: argparse.Namespace) -> Result:
    if args.invoice_id:
        one = ctx.api.call(
            "billing",
            ctx.api.billing.GetInvoice,
            billing_pb.GetInvoiceRequest(invoice_id=args.invoice_id),
        )
        return Result(one, lambda console: render.show_invoice(console, one.invoice))
    request = billing_pb.ListInvoicesRequest(
        page_size=args.limit,
        tenant_id=args.tenant or "",
        state=invoice_pb2.InvoiceState.Value(f"INVOICE_STATE_{args.state or 'UNSPECIFIED'}"),
    )
    if args.month:
        request.month.CopyFrom(args.month)
    reply = ctx.api.call("billing", ctx.api.billing.ListInvoices, request)
    return Result(reply, lambda console: console.print(render.invoices_table(reply.invoices)))


def export_invoice(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "billing",
        ctx.api.billing.ExportInvoice,
        billing_pb.ExportInvoiceRequest(
            invoice_id=args.invoice_id, format=EXPORT_FORMATS[args.format]
        ),
    )
    return save_document(reply, args.output_file, f"{args.invoice_id}.{args.format}")


def save_document(
    reply: billing_pb.ExportInvoiceResponse | billing_pb.ExportCreditNoteResponse,
    output_file: str | None, fallback_name: str,
) -> Result:
    """Write an exported document to ``output_file`` (a file or a directory) or, by
    default, under the server's suggested name in the current directory."""
    target = Path(output_file or reply.filename or fallback_name)
    if target.is_dir():
        target = target / (reply.filename or fallback_name)
    try:
        target.write_bytes(reply.content)
    except OSError as error:
        raise CliError(f"cannot write {target}: {error.strerror}") from error
    summary = {
        "file": str(target),
        "content_type": reply.content_type,
        "bytes": len(reply.content),
    }
    return Result(
        summary,
        lambda console: console.print(
            f"wrote {target} ({reply.content_type}, {len(reply.content)} bytes)"
        ),
    )


def finalize(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "billing",
        ctx.api.billing.FinalizeInvoice,
        billing_pb.FinalizeInvoiceRequest(invoice_id=args.invoice_id),
    )
    return Result(reply, lambda console: render.show_invoice(console, reply.invoice))


def billing_run(ctx: Context, args: argparse.Namespace) -> Result:
    request = billing_pb.RunBillingCycleRequest(
        month=args.month or last_month(),
        billing_entity_id=args.entity,
        tenant_ids=args.tenant,
        dry_run=args.dry_run,
    )
    if args.as_of:
        request.as_of_time.CopyFrom(timestamp(args.as_of))
    summary = billing_pb.BillingSummary()
    stream = ctx.api.stream("billing", ctx.api.billing.RunBillingCycle, request)
    with progress_bar(ctx) as progress:
        task = progress.add_task("billing", total=None)
        for message in stream:
            if message.HasField("summary"):
                summary = message.summary
                continue
            p = message.progress
            stage = billing_pb.BillingStage.Name(p.stage).removeprefix("BILLING_STAGE_").lower()
            done, total = (
                (p.invoices_done, p.invoices_total)
                if p.stage == billing_pb.BILLING_STAGE_INVOICING
                else (p.circuits_done, p.circuits_total)
            )
            progress.update(task, description=stage, completed=done, total=total or None)
            if p.message and not ctx.json_output:
                progress.console.print(f"  {p.message}")

    def show(console: Console) -> None:
        console.print(
            render.key_values(
                f"Billing run {summary.run_id}",
                [
                    ("month", f"{summary.month.year}-{summary.month.month:02d}"),
                    ("entity", summary.billing_entity_id),
                    ("circuits billed", summary.circuits_billed),
                    ("sandbox circuits left out", summary.sandbox_circuits_left_out),
                    ("invoices", f"{summary.invoices_created} created, "
                                 f"{summary.invoices_updated} updated, "
                                 f"{summary.invoices_unchanged} unchanged, "
                                 f"{summary.invoices_skipped_finalized} finalised (untouched)"),
                    ("totals", ", ".join(render.money(t) for t in summary.totals)),
                    ("invoice ids", ", ".join(summary.invoice_ids)),
                    ("dry run", "yes" if summary.dry_run else "no"),
                ],
            )
        )
        for warning in summary.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")

    return Result(summary, show)


# -- ops --------------------------------------------------------------------------------


def pending(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order",
        ctx.api.approvals.ListPendingApprovals,
        ops_pb.ListPendingApprovalsRequest(page_size=args.limit),
    )
    return Result(
        reply,
        lambda console: console.print(
            render.table(
                "Waiting for your telco",
                ["order", "type", "Mbps", "router", "payload sha256 (approve this)", "expires",
                 "boost pair"],
                [
                    [p.order.id, render.order_type(p.order.type), p.order.spec.bandwidth_mbps,
                     p.payload.router_name, p.payload.sha256,
                     render.when(p.expire_time), render.boost_pair(p.order)]
                    for p in reply.pending_approvals
                ],
            )
        ),
    )


def show_pending(ctx: Context, args: argparse.Namespace) -> Result:
    """The order and the dry-run payload for every router it touches."""
    order = ctx.api.call(
        "order", ctx.api.orders.GetOrder, order_pb.GetOrderRequest(order_id=args.order_id)
    ).order

    def dry_run(order_id: str) -> list[router_payload_pb2.RouterPayload]:
        return list(ctx.api.call("provisioning", ctx.api.provisioning.DryRun,
                                 prov_pb.DryRunRequest(order_id=order_id)).payloads)

    payloads = dry_run(args.order_id)
    # A boost is approved once with its revert (--revert-sha256): its payloads too.
    revert = dry_run(order.revert_order_id) if order.revert_order_id else []

    def show(console: Console) -> None:
        render.show_order(console, order)
        for label, payload in [("", p) for p in payloads] + [
                (f" revert {order.revert_order_id}", p) for p in revert]:
            console.print(
                f"\n[bold]{payload.router_name}[/bold]{label} ({render.side(payload.side)}, "
                f"{payload.platform}) sha256 [cyan]{payload.sha256}[/cyan]"
            )
            console.print(Syntax(payload.content, "xml", word_wrap=True))

    shown: dict[str, object] = {"order": order, "payloads": payloads}
    if revert:
        shown["revert_payloads"] = revert
    return Result(shown, show)


def approve(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order",
        ctx.api.approvals.Approve,
        ops_pb.ApproveRequest(
            order_id=args.order_id, payload_sha256=args.sha256, comment=args.comment,
            revert_payload_sha256=args.revert_sha256 or "",
        ),
    )
    return Result(reply, lambda console: render.show_order(console, reply.order))


def reject(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order",
        ctx.api.approvals.Reject,
        ops_pb.RejectRequest(order_id=args.order_id, reason=args.reason),
    )
    return Result(reply, lambda console: render.show_order(console, reply.order))


def devices(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "provisioning",
        ctx.api.provisioning.ListDevices,
        prov_pb.ListDevicesRequest(side=_side(args), page_size=1000),
    )
    return Result(
        reply,
        lambda console: console.print(
            render.table(
                "Edge routers",
                ["name", "side", "telco", "platform", "address", "reachable", "circuits",
                 "last seen", "sandbox"],
                [
                    [d.name, render.side(d.side), d.telco_id, d.platform, d.management_address,
                     "yes" if d.reachable else "no", d.circuit_count, render.when(d.last_seen_time),
                     "yes" if d.sandbox else ""]
                    for d in reply.devices
                ],
            )
        ),
    )


def check_sync(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "provisioning",
        ctx.api.provisioning.CheckSync,
        prov_pb.CheckSyncRequest(device_names=args.device),
    )
    return Result(
        reply,
        lambda console: console.print(
            render.table(
                "Running configuration against intent",
                ["router", "in sync", "missing", "extra", "different", "error"],
                [
                    [d.device_name, "yes" if d.in_sync else "NO",
                     " ".join(d.missing_circuit_ids), " ".join(d.extra_circuit_ids),
                     " ".join(c.circuit_id for c in d.different), d.error.message]
                    for d in reply.devices
                ],
            )
        ),
    )


SYNC_STATES = {
    prov_pb.SYNC_STATE_IN_SYNC: "in sync",
    prov_pb.SYNC_STATE_DRIFTED: "DRIFTED",
    prov_pb.SYNC_STATE_UNKNOWN: "unknown",
}


def sync_status(ctx: Context, args: argparse.Namespace) -> Result:
    """What the continuous drift watch last saw, per circuit and router (no router read)."""
    reply = prov_pb.ListSyncStatusResponse()
    token = ""
    while True:
        page = ctx.api.call(
            "provisioning",
            ctx.api.provisioning.ListSyncStatus,
            prov_pb.ListSyncStatusRequest(circuit_id=args.circuit or "",
                                          not_in_sync_only=args.not_in_sync, page_token=token),
        )
        reply.statuses.extend(page.statuses)
        reply.interval_seconds = page.interval_seconds
        token = page.next_page_token
        if not token:
            break
    every = f"every {reply.interval_seconds} s" if reply.interval_seconds else "off"
    return Result(
        reply,
        lambda console: console.print(
            render.table(
                f"Circuit sync status (drift watch {every})",
                ["circuit", "router", "side", "status", "since", "last seen in sync", "detail"],
                [
                    [s.circuit_id, s.device_name, render.side(s.side),
                     SYNC_STATES.get(s.state, "?"), render.when(s.since),
                     render.when(s.last_seen_in_sync_time), s.detail]
                    for s in reply.statuses
                ],
            )
        ),
    )


def redeploy(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "provisioning",
        ctx.api.provisioning.Redeploy,
        prov_pb.RedeployRequest(circuit_id=args.circuit_id, dry_run=args.dry_run),
    )

    def show(console: Console) -> None:
        for payload in reply.payloads:
            console.print(f"{payload.router_name}: sha256 {payload.sha256}")
        console.print(
            f"repair {reply.repair.repair_id} requested: nothing is pushed until each telco's "
            "ops approved its router's payload (`idcctl ops repair approve`)"
            if reply.repair.repair_id else "dry run: nothing pushed"
        )

    return Result(reply, show)


def circuit_config(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "provisioning",
        ctx.api.provisioning.GetCircuitConfig,
        prov_pb.GetCircuitConfigRequest(circuit_id=args.circuit_id),
    )

    def show(console: Console) -> None:
        for config in reply.configs:
            state = "in sync" if config.in_sync else "NOT in sync"
            console.print(f"\n[bold]{config.device_name}[/bold] running configuration ({state})")
            if config.error.message:
                console.print(f"[red]{config.error.message}[/red]")
            console.print(config.running_config or "(absent)", markup=False, highlight=False)

    return Result(reply, show)


def capacity(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order",
        ctx.api.orders.GetCapacity,
        order_pb.GetCapacityRequest(port_ids=args.port,
                                    end_time=timestamp(args.until) if args.until else None),
    )
    c = reply.capacity

    def show(console: Console) -> None:
        console.print(
            render.key_values(
                "Channel",
                [
                    ("capacity", f"{c.channel_capacity_mbps} Mbps"),
                    ("committed", f"{c.channel_committed_mbps} Mbps"),
                    ("reserved", f"{c.channel_reserved_mbps} Mbps"),
                    ("free", f"{c.channel_free_mbps} Mbps"),
                ],
            )
        )
        console.print(
            render.table(
                "Ports",
                ["port", "side", "speed", "committed", "reserved", "free", "VLANs used/free"],
                [
                    [p.port_id, render.side(p.side), p.speed_mbps, p.committed_mbps,
                     p.reserved_mbps, p.free_mbps, f"{p.used_vlan_count}/{p.free_vlan_count}"]
                    for p in c.ports
                ],
            )
        )
        if reply.timeline:
            console.print(render.capacity_timeline(reply.timeline))

    return Result(reply, show)


# -- admin ------------------------------------------------------------------------------


def contacts_reencrypt(ctx: Context, args: argparse.Namespace) -> Result:
    """Move every order's contacts to the active key of the order service's key set."""
    url = ServiceSettings.from_env(ORDER.name, ORDER.default_port).database_url
    cipher = ContactCipher(load_key_set())
    db.migrate(url, ORDER.migrations_dir)
    factory = db.make_session_factory(db.make_engine(url))
    moved = reencrypt(factory, cipher)
    per_key = sealed_per_key(factory)
    data = {"reencrypted": moved, "active_key_id": cipher.active_key_id, "orders_per_key": per_key}
    return Result(data, lambda console: console.print(
        f"re-encrypted {moved} order(s) with key {cipher.active_key_id}; orders per key: "
        + (", ".join(f"{k} {n}" for k, n in sorted(per_key.items())) or "none")))


def progress_bar(ctx: Context) -> Progress:
    """The billing commands' progress bar (silent under --json)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=ctx.console,
        disable=ctx.json_output,
        transient=False,
    )
