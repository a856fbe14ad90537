"""``idcctl ops repair`` and ``idcctl ops history``: four eyes on router changes.

``ops redeploy`` requests a repair; each affected telco's ops approves the payload of their
own router (``ops repair approve`` with the hash shown by ``ops repair list``); the
requester never approves. ``ops history`` shows every approval decision of an order.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from idc.ops.v1 import approval_service_pb2 as ops_pb
from idc.order.v1 import order_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from services.cli import render
from services.cli.commands import Context
from services.cli.render import Result

REPAIR_STATES = {v: k.removeprefix("REPAIR_STATE_") for k, v in prov_pb.RepairState.items()}
DECISION_KINDS = {
    v: k.removeprefix("REPAIR_DECISION_KIND_") for k, v in prov_pb.RepairDecisionKind.items()
}


def show_repair(console: Console, repair: prov_pb.Repair) -> None:
    console.print(
        f"repair [bold]{repair.repair_id}[/bold] of {repair.circuit_id}: "
        f"{REPAIR_STATES.get(repair.state, '?')}, requested by {repair.requested_by}"
        + (f", saga {repair.saga_id}" if repair.saga_id else "")
    )
    for payload in repair.payloads:
        console.print(
            f"  {payload.router_name} ({render.side(payload.side)}, telco {payload.telco_id}) "
            f"sha256 [cyan]{payload.sha256}[/cyan]"
        )
    console.print(render.table(
        "decisions",
        ["when", "decision", "side", "by", "payload", "comment"],
        [[render.when(d.time), DECISION_KINDS.get(d.kind, "?"),
          render.side(d.side) if d.side else "", d.actor, d.payload_sha256[:12], d.comment]
         for d in repair.decisions],
    ))


def repair_list(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "provisioning", ctx.api.provisioning.ListRepairs,
        prov_pb.ListRepairsRequest(circuit_id=args.circuit or "", pending_only=args.pending,
                                   page_size=args.limit),
    )

    def show(console: Console) -> None:
        for repair in reply.repairs:
            show_repair(console, repair)
        if not reply.repairs:
            console.print("no repairs")

    return Result(reply, show)


def repair_approve(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "provisioning", ctx.api.provisioning.ApproveRepair,
        prov_pb.ApproveRepairRequest(repair_id=args.repair_id, payload_sha256=args.sha256,
                                     comment=args.comment),
    )
    return Result(reply, lambda console: show_repair(console, reply.repair))


def repair_reject(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "provisioning", ctx.api.provisioning.RejectRepair,
        prov_pb.RejectRepairRequest(repair_id=args.repair_id, reason=args.reason),
    )
    return Result(reply, lambda console: show_repair(console, reply.repair))


def approval_history(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "order", ctx.api.approvals.ListApprovalHistory,
        ops_pb.ListApprovalHistoryRequest(order_id=args.order_id, page_size=args.limit),
    )
    return Result(reply, lambda console: console.print(render.table(
        f"approval decisions of {args.order_id}",
        ["when", "side", "telco", "decision", "by", "payload", "comment"],
        [[render.when(d.decide_time), render.side(d.side), d.telco_id,
          APPROVAL_STATES.get(d.state, "?"), d.approver, d.payload_sha256[:12], d.comment]
         for d in reply.decisions],
    )))


APPROVAL_STATES = {
    v: k.removeprefix("APPROVAL_STATE_") for k, v in order_pb2.ApprovalState.items()
}


def add_commands(b: Any, ops: Any) -> None:
    """``ops repair list|approve|reject`` and ``ops history`` (``b``: main._Builder)."""
    repair = b.group(ops, "repair", "repairs (redeploys) waiting for four eyes (ops token)")
    p = b.leaf(repair, "list", repair_list, "repairs with their payloads and decisions")
    p.add_argument("--circuit", help="only this circuit")
    p.add_argument("--pending", action="store_true", help="only those waiting for approval")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(target_service="provisioning")
    p = b.leaf(
        repair, "approve", repair_approve, "approve your telco's router payload of a repair",
        "Approve your telco's router payload of a repair. --sha256 is the hash you reviewed\n"
        "(`ops repair list`); you cannot approve a repair you requested.",
    )
    p.add_argument("repair_id")
    p.add_argument("--sha256", required=True, help="hash of the payload you reviewed")
    p.add_argument("--comment", default="")
    p.set_defaults(target_service="provisioning")
    p = b.leaf(repair, "reject", repair_reject, "reject a repair for your telco")
    p.add_argument("repair_id")
    p.add_argument("--reason", required=True)
    p.set_defaults(target_service="provisioning")
    p = b.leaf(ops, "history", approval_history,
               "every approval decision of an order (approvals, rejections, supersessions)")
    p.add_argument("order_id")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(target_service="order")
