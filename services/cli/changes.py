"""``idcctl customer preview``: what a bandwidth change or a disconnect would cost
(OrderService.PreviewChange, customer token), and ``--validate-only`` for the calls that
place orders: every check and the price answered, nothing stored or reserved."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from idc.order.v1 import order_service_pb2 as order_pb
from services.cli import render
from services.cli.commands import Context
from services.cli.errors import CliError, ExitCode
from services.cli.render import Result


def preview(ctx: Context, args: argparse.Namespace) -> Result:
    request = order_pb.PreviewChangeRequest(circuit_id=args.circuit_id, time_zone=args.time_zone)
    if args.disconnect:
        if args.burst is not None:
            raise CliError("--burst is for a bandwidth change, not a --disconnect",
                           ExitCode.INVALID_ARGUMENT)
        request.disconnect.SetInParent()
    else:
        request.modify.bandwidth_mbps = args.bandwidth
        if args.burst is not None:
            request.modify.burst_mbps = args.burst
    reply = ctx.api.call("order", ctx.api.orders.PreviewChange, request)

    def show(console: Console) -> None:
        p, month = reply.preview, reply.preview.proration
        console.print(render.key_values(
            f"{'Disconnect' if args.disconnect else 'Bandwidth change'} of {p.circuit_id}",
            [
                ("effective", p.effective_date),
                ("MRC now", render.money(p.current_price.mrc)),
                ("MRC after", render.money(p.new_price.mrc)),
                (f"{month.month} now", f"{month.current_days}/{month.days_in_month} days, "
                                       f"{render.money(month.current_amount)}"),
                (f"{month.month} after", f"{month.new_days}/{month.days_in_month} days, "
                                         f"{render.money(month.new_amount)}"),
                (f"{month.month} total", render.money(month.total)),
                ("term ends", f"{p.term_end_date} ({p.remaining_term_months} months left)"),
                ("termination fee", render.money(p.termination_fee) or "none"),
            ],
        ))

    return Result(reply, show)


def add_commands(b: Any, customer: Any) -> None:
    p = b.leaf(
        customer, "preview", preview, "what a bandwidth change or a disconnect would cost",
        "The new MRC, this month's proration and any early-termination fee of a change\n"
        "taking effect today (nothing is ordered).",
    )
    p.add_argument("circuit_id")
    change = p.add_mutually_exclusive_group(required=True)
    change.add_argument("--bandwidth", type=int, metavar="MBPS", help="new committed rate")
    change.add_argument("--disconnect", action="store_true", help="a disconnect")
    p.add_argument("--burst", type=int, metavar="MBPS", help="new burst (default: unchanged)")
    p.add_argument("--time-zone", default="", metavar="IANA",
                   help="the zone you are billed in (your invoices show it; default UTC)")


def add_validate_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validate-only", action="store_true",
                        help="run every check and answer the price; store nothing")
