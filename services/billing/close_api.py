"""Billing jobs, close warnings and usage completeness: application <-> proto."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from idc.billing.v1 import billing_service_pb2 as pb
from idc.billing.v1 import usage_pb2
from idc.type.v1 import money_pb2, year_month_pb2
from services.billing.close import parse_month, summary_from, warning_from, warnings_of
from services.billing.domain.close import CloseWarning, Completeness
from services.billing.domain.jobs import JobState
from services.billing.domain.money import format_amount
from services.billing.domain.rating import BillingMonth
from services.billing.job_store import Finalization, JobRecord, SqlJobStore
from services.billing.jobs import FOLLOW_POLL_S, JobRunner, failure
from services.common.errors import NotFound


def stamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def year_month(month: BillingMonth) -> year_month_pb2.YearMonth:
    return year_month_pb2.YearMonth(year=month.year, month=month.month)


def warning(w: CloseWarning) -> pb.CloseWarning:
    return pb.CloseWarning(
        kind=pb.CloseWarningKind.Value(f"CLOSE_WARNING_KIND_{w.kind.value}"),
        subject=w.subject,
        message=w.message,
    )


def summary(record: dict[str, Any]) -> pb.BillingSummary:
    s = summary_from(record)
    return pb.BillingSummary(
        run_id=s.run_id,
        month=year_month(s.month),
        billing_entity_id=s.billing_entity_id,
        as_of_time=stamp(s.as_of),
        invoices_created=s.created,
        invoices_updated=s.updated,
        invoices_unchanged=s.unchanged,
        invoices_skipped_finalized=s.skipped_finalized,
        adjustment_lines=s.adjustment_lines,
        circuits_billed=s.circuits_billed,
        sandbox_circuits_left_out=s.sandbox_left_out,
        invoice_ids=s.invoice_ids,
        totals=[
            money_pb2.Money(currency_code=c, amount=format_amount(a))
            for c, a in sorted(s.totals.items())
        ],
        warnings=[w.message for w in s.warnings],
        dry_run=s.dry_run,
        close_warnings=[warning(w) for w in s.warnings],
        reconciliation_differences=[
            json_format.ParseDict(r, usage_pb2.CircuitReconciliation())
            for r in record.get("reconciliation", [])
        ],
    )


def progress(job_id: str, p: dict[str, Any], time: datetime) -> pb.BillingProgress:
    return pb.BillingProgress(
        stage=pb.BillingStage.Value(f"BILLING_STAGE_{p.get('stage', 'UNSPECIFIED')}"),
        circuits_total=p.get("circuits_total", 0),
        circuits_done=p.get("circuits_done", 0),
        invoices_total=p.get("invoices_total", 0),
        invoices_done=p.get("invoices_done", 0),
        message=p.get("message", ""),
        time=stamp(time),
        job_id=job_id,
        target=p.get("target", ""),
    )


def finalization(f: Finalization) -> pb.CloseFinalization:
    return pb.CloseFinalization(
        id=f.id,
        job_id=f.job_id,
        months=f.months,
        warnings=[warning(warning_from(w)) for w in f.warnings],
        override_reason=f.override_reason,
        overridden_by=f.overridden_by,
        finalized_by=f.finalized_by,
        create_time=stamp(f.created_at),
        invoice_ids=f.invoice_ids,
    )


def job(record: JobRecord, finalizations: Sequence[Finalization] = ()) -> pb.BillingJob:
    message = pb.BillingJob(
        id=record.id,
        kind=pb.BillingJobKind.Value(f"BILLING_JOB_KIND_{record.kind.value}"),
        state=pb.BillingJobState.Value(f"BILLING_JOB_STATE_{record.state.value}"),
        targets=[
            pb.BillingTarget(
                billing_entity_id=t["entity"], month=year_month(parse_month(t["month"]))
            )
            for t in record.request["targets"]
        ],
        as_of_time=stamp(datetime.fromisoformat(record.request["as_of"])),
        progress=progress(record.id, record.progress, record.heartbeat_at),
        summaries=[summary(s) for s in record.result.get("summaries", [])],
        warnings=[warning(w) for w in warnings_of(record)],
        error=record.error,
        created_by=record.created_by,
        create_time=stamp(record.created_at),
        start_time=stamp(record.started_at),
        end_time=stamp(record.finished_at),
        finalizations=[finalization(f) for f in finalizations],
        dry_run=record.request["dry_run"],
    )
    return message


def followed(
    store: SqlJobStore, runner: JobRunner, job_id: str, clock: Callable[[], datetime]
) -> Iterator[pb.RunBillingCycleResponse]:
    """A RunBillingCycle stream over its job: every progress report (from this process's
    worker; the stored latest one when another process runs it), then the summary or the
    job's error. The caller's deadline bounds it; dropping it leaves the job running."""
    seen, last = 0, None
    while True:
        reports = runner.reports(job_id, seen, FOLLOW_POLL_S)
        seen += len(reports)
        for report in reports:
            yield pb.RunBillingCycleResponse(progress=progress(job_id, report, clock()))
            last = report
        record = store.get(job_id)
        if record is None:
            raise NotFound(f"billing job {job_id} does not exist")
        if record.state.finished:
            break
        elsewhere = not runner.runs_here(job_id)
        if elsewhere and record.progress and record.progress != last:
            last = record.progress
            yield pb.RunBillingCycleResponse(
                progress=progress(job_id, record.progress, record.heartbeat_at)
            )
    for report in runner.reports(job_id, seen, 0):
        yield pb.RunBillingCycleResponse(progress=progress(job_id, report, clock()))
    if record.state is not JobState.SUCCEEDED:
        raise failure(record)
    for s in record.result["summaries"]:
        yield pb.RunBillingCycleResponse(summary=summary(s))


def completeness(c: Completeness) -> pb.GetUsageCompletenessResponse:
    lag: Any = c.lag
    return pb.GetUsageCompletenessResponse(
        month=year_month(c.month),
        month_end_time=stamp(c.month_end),
        frontiers=[
            pb.MeterFrontier(
                router_name=f.router_name,
                newest_interval_end_time=stamp(f.newest_interval_end),
                caught_up=f.newest_interval_end >= c.month_end,
            )
            for f in c.frontiers
        ],
        lag_known=lag is not None,
        lag_records=c.lag_records or 0,
        partitions=[
            pb.ConsumerPartitionLag(topic=p.topic, partition=p.partition, records=p.records)
            for p in (lag or [])
        ],
        complete=c.complete,
        warnings=[warning(w) for w in c.warnings()],
    )
