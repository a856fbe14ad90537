"""``idcctl billing reconcile``: both ends of each circuit over a month
(BillingService.GetReconciliation, billing admin token)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from idc.billing.v1 import billing_service_pb2 as billing_pb
from idc.billing.v1 import usage_pb2
from services.cli import commands, render
from services.cli.commands import Context
from services.cli.render import Result


def _end(end: usage_pb2.EndUsage) -> str:
    p95 = f"{end.p95_mbps} Mbps" if end.p95_known else "-"
    return (
        f"{render.side(end.side)}: {end.bytes_in + end.bytes_out:,} B, p95 {p95}, "
        f"{end.samples_present} samples, {end.intervals_lost_to_gaps} lost to gaps"
    )


def billing_reconcile(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "billing",
        ctx.api.billing.GetReconciliation,
        billing_pb.GetReconciliationRequest(
            month=args.month, tenant_id=args.tenant or "", differences_only=args.differences
        ),
    )

    def show(console: Console) -> None:
        rows = [
            (
                r.circuit_id, r.tenant_id, _end(r.billed_end), _end(r.other_end),
                f"{r.volume_difference_bytes:+,} B ({r.volume_difference_percent} %)",
                f"{r.p95_difference_mbps:+} Mbps ({r.p95_difference_percent} %)",
                "ok" if r.within_tolerance else "[red]OUTSIDE[/red]",
            )
            for r in reply.circuits
        ]
        console.print(render.table(
            f"Reconciliation {args.month.year}-{args.month.month:02d} "
            f"(tolerance {reply.tolerance_percent} %)",
            ["circuit", "tenant", "billed end", "other end", "volume diff", "p95 diff", ""],
            rows,
        ))
        outside = sum(not r.within_tolerance for r in reply.circuits)
        if outside:
            console.print(f"[yellow]warning:[/yellow] {outside} circuit(s) outside tolerance")

    return Result(reply, show)


def add_commands(b: Any, billing: Any) -> None:
    p = b.leaf(billing, "reconcile", billing_reconcile,
               "both ends of each circuit over a month: volumes, p95, difference")
    p.add_argument("--month", type=commands.year_month, metavar="YYYY-MM", required=True,
                   help="month to reconcile")
    p.add_argument("--tenant", help="only this tenant's circuits")
    p.add_argument("--differences", action="store_true",
                   help="only circuits outside the tolerance")
