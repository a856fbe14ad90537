"""``idcctl billing close | job | completeness | finalize``: the guarded month-end close.

``billing close`` starts a close (a job of the billing service: it goes on if idcctl is
interrupted), shows its progress and then its warnings; ``billing finalize --month``
finalises the month's invoices, refused while warnings stand unless ``--override-reason``
says why they are accepted (recorded with who gave it).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console

from idc.billing.v1 import billing_service_pb2 as billing_pb
from services.cli import render
from services.cli.commands import Context, finalize, moment, progress_bar, timestamp, year_month
from services.cli.errors import CliError, ExitCode
from services.cli.render import Result

JOB_STATES = {
    v: k.removeprefix("BILLING_JOB_STATE_") for k, v in billing_pb.BillingJobState.items()
}
WARNING_KINDS = {
    v: k.removeprefix("CLOSE_WARNING_KIND_") for k, v in billing_pb.CloseWarningKind.items()
}
FINISHED = {
    billing_pb.BILLING_JOB_STATE_SUCCEEDED,
    billing_pb.BILLING_JOB_STATE_FAILED,
    billing_pb.BILLING_JOB_STATE_INTERRUPTED,
}
POLL_S = 0.5


def month_text(month: Any) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def show_job(console: Console, job: billing_pb.BillingJob) -> None:
    targets = ", ".join(
        f"{t.billing_entity_id or 'all entities'} {month_text(t.month)}" for t in job.targets
    )
    console.print(
        render.key_values(
            f"Billing job {job.id}",
            [
                ("state", JOB_STATES.get(job.state, "?")),
                ("bills", targets),
                ("cut-off", render.when(job.as_of_time)),
                ("started by", job.created_by),
                ("dry run", "yes" if job.dry_run else "no"),
                *([("error", job.error)] if job.error else []),
            ],
        )
    )
    for summary in job.summaries:
        console.print(
            f"  {summary.billing_entity_id or 'all entities'} {month_text(summary.month)}: "
            f"{summary.circuits_billed} circuit(s); invoices {summary.invoices_created} created, "
            f"{summary.invoices_updated} updated, {summary.invoices_unchanged} unchanged, "
            f"{summary.invoices_skipped_finalized} finalised; totals "
            + (", ".join(render.money(t) for t in summary.totals) or "none")
        )
    if job.state == billing_pb.BILLING_JOB_STATE_SUCCEEDED:
        show_warnings(console, job.warnings)
    for record in job.finalizations:
        show_finalization(console, record)


def show_warnings(console: Console, warnings: Any) -> None:
    if not warnings:
        console.print("[green]no warnings[/green]")
        return
    console.print(
        render.table(
            f"{len(warnings)} warning(s): finalising needs them resolved or an override reason",
            ["kind", "about", "warning"],
            [[WARNING_KINDS.get(w.kind, "?"), w.subject, w.message] for w in warnings],
        )
    )


def show_finalization(console: Console, record: billing_pb.CloseFinalization) -> None:
    console.print(
        f"finalised {', '.join(record.months)} at {render.when(record.create_time)} by "
        f"{record.finalized_by}: {len(record.invoice_ids)} invoice(s)"
    )
    if record.warnings:
        console.print(
            f"  {len(record.warnings)} warning(s) overridden by {record.overridden_by}: "
            f"{record.override_reason}"
        )


def close(ctx: Context, args: argparse.Namespace) -> Result:
    request = billing_pb.StartBillingCloseRequest(billing_entity_ids=args.entity)
    if args.month:
        request.month.CopyFrom(args.month)
    if args.as_of:
        request.as_of_time.CopyFrom(timestamp(args.as_of))
    job = ctx.api.call("billing", ctx.api.billing.StartBillingClose, request).job
    if not ctx.json_output:
        ctx.console.print(f"close job [bold]{job.id}[/bold] started")
    if not args.no_wait:
        job = _wait(ctx, job, args.wait_s)
    code = ExitCode.OK
    if job.state in (billing_pb.BILLING_JOB_STATE_FAILED, billing_pb.BILLING_JOB_STATE_INTERRUPTED):
        code = ExitCode.ERROR

    def show(console: Console) -> None:
        show_job(console, job)
        if job.state not in FINISHED:
            console.print(f"still running: `idcctl billing job {job.id}` shows it later")
        elif job.state == billing_pb.BILLING_JOB_STATE_SUCCEEDED:
            console.print(
                f"next: `idcctl billing finalize --job {job.id}`"
                + (" --override-reason '...'" if job.warnings else "")
            )

    return Result(job, show, code)


def _wait(ctx: Context, job: billing_pb.BillingJob, wait_s: float) -> billing_pb.BillingJob:
    deadline = time.monotonic() + wait_s
    with progress_bar(ctx) as progress:
        task = progress.add_task("queued", total=None)
        while job.state not in FINISHED and time.monotonic() < deadline:
            time.sleep(POLL_S)
            job = ctx.api.call(
                "billing",
                ctx.api.billing.GetBillingJob,
                billing_pb.GetBillingJobRequest(job_id=job.id),
            ).job
            p = job.progress
            stage = billing_pb.BillingStage.Name(p.stage).removeprefix("BILLING_STAGE_").lower()
            done, total = (
                (p.invoices_done, p.invoices_total)
                if p.stage == billing_pb.BILLING_STAGE_INVOICING
                else (p.circuits_done, p.circuits_total)
            )
            progress.update(
                task, description=f"{p.target} {stage}".strip(), completed=done, total=total or None
            )
    return job


def job(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "billing",
        ctx.api.billing.GetBillingJob,
        billing_pb.GetBillingJobRequest(job_id=args.job_id),
    )
    return Result(reply.job, lambda console: show_job(console, reply.job))


def completeness(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call(
        "billing",
        ctx.api.billing.GetUsageCompleteness,
        billing_pb.GetUsageCompletenessRequest(month=args.month, billing_entity_id=args.entity),
    )

    def show(console: Console) -> None:
        lag = f"{reply.lag_records} record(s)" if reply.lag_known else "unknown (broker)"
        console.print(
            render.key_values(
                f"Usage of {month_text(reply.month)}",
                [
                    ("month ends", render.when(reply.month_end_time)),
                    ("consumer lag", lag),
                    ("complete", "yes" if reply.complete else "no"),
                ],
            )
        )
        console.print(
            render.table(
                "newest usage per meter router",
                ["router", "stored up to", "caught up"],
                [
                    [
                        f.router_name,
                        render.when(f.newest_interval_end_time),
                        "yes" if f.caught_up else "no",
                    ]
                    for f in reply.frontiers
                ],
            )
        )
        for w in reply.warnings:
            console.print(f"[yellow]warning:[/yellow] {w.message}")

    return Result(reply, show)


def finalize_close(ctx: Context, args: argparse.Namespace) -> Result:
    """One invoice (``finalize INVOICE_ID``) or a close (``--month`` or ``--job``)."""
    if args.invoice_id:
        if args.month or args.job or args.override_reason:
            raise CliError(
                "give an invoice id, or --month/--job (with --override-reason), not both",
                ExitCode.USAGE,
            )
        return finalize(ctx, args)
    if not args.month and not args.job:
        raise CliError("give an invoice id, --month YYYY-MM or --job JOB_ID", ExitCode.USAGE)
    request = billing_pb.FinalizeBillingCloseRequest(
        job_id=args.job or "", override_reason=args.override_reason or ""
    )
    if args.month:
        request.month.CopyFrom(args.month)
    reply = ctx.api.call("billing", ctx.api.billing.FinalizeBillingClose, request)
    return Result(
        reply.finalization, lambda console: show_finalization(console, reply.finalization)
    )


def add_commands(b: Any, billing: Any) -> None:
    """``billing close | job | completeness`` (``b``: main._Builder)."""
    p = b.leaf(
        billing,
        "close",
        close,
        "close a month: bill every entity, then show the warnings",
        "Close a month: bill every entity's customers (a job of the billing service, it goes\n"
        "on if idcctl stops), show the progress, then the warnings that stand against\n"
        "finalising. Then `idcctl billing finalize --job <id>`.",
    )
    p.add_argument(
        "--month",
        type=year_month,
        metavar="YYYY-MM",
        help="month to close (default: the previous month in each entity's zone)",
    )
    p.add_argument(
        "--entity", action="append", default=[], help="only these billing entities (default: all)"
    )
    p.add_argument("--as-of", type=moment, help="usage cut-off (default: now)")
    p.add_argument("--no-wait", action="store_true", help="start the close and return")
    p.add_argument(
        "--wait-s",
        type=float,
        default=3600.0,
        help="how long to show progress before leaving the close running (3600)",
    )
    p.set_defaults(target_service="billing")
    p = b.leaf(billing, "job", job, "a billing job (close or run): state, summaries, warnings")
    p.add_argument("job_id")
    p.set_defaults(target_service="billing")
    p = b.leaf(
        billing,
        "completeness",
        completeness,
        "whether a month's usage is complete: newest usage per router, consumer lag",
    )
    p.add_argument("--month", type=year_month, metavar="YYYY-MM", required=True)
    p.add_argument("--entity", default="", help="only this entity's time zones")
    p.set_defaults(target_service="billing")
    p = b.leaf(
        billing,
        "finalize",
        finalize_close,
        "make a draft invoice, or a closed month, final",
        "Make one draft invoice final (INVOICE_ID), or every invoice of a close (--month:\n"
        "its newest close; --job: that close). A close with warnings is refused unless\n"
        "--override-reason says why they are accepted; the reason and you are recorded.",
    )
    p.add_argument("invoice_id", nargs="?", default="")
    p.add_argument("--month", type=year_month, metavar="YYYY-MM", help="the month's newest close")
    p.add_argument("--job", help="this close's job id")
    p.add_argument("--override-reason", help="why the close's warnings are accepted")
    p.set_defaults(target_service="billing")
