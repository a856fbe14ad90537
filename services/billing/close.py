"""Month-end close: billing runs as jobs, the close's warnings, guarded finalisation.

1. ``start_run`` / ``start_close`` check the request at once (unknown tenants NOT_FOUND,
   unknown entities, a cut-off in the future), then queue a job (jobs.py) that bills each
   target (entity, month) with the BillingCycle; a close bills every entity's month (by
   default the previous month in the entity's time zone) and then adds the warnings of
   usage not known to be complete and of reconciliation differences.
2. ``finalize`` finalises a close's draft invoices, refused while its warnings stand
   unless overridden with a reason; the decision (warnings, reason, who) is recorded first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from google.protobuf import json_format

from services.billing.cycle import BillingCycle, CycleRequest, Progress, Summary
from services.billing.domain.close import (
    CloseWarning,
    Completeness,
    MeterFrontier,
    PartitionLag,
    WarningKind,
    close_months,
    may_finalise,
    month_end,
)
from services.billing.domain.entities import BillingDirectory
from services.billing.domain.jobs import JobKind, JobState
from services.billing.domain.rating import BillingMonth
from services.billing.invoices import InvoiceState, StoredInvoice
from services.billing.job_store import Finalization, JobRecord, SqlJobStore
from services.billing.jobs import JobRunner, Report
from services.billing.reconcile_proto import reconciliation_proto
from services.billing.store import SqlBillingStore
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound


class UsageLag(Protocol):
    """The usage consumer's lag per partition; None when the broker does not answer."""

    def __call__(self) -> list[PartitionLag] | None: ...


@dataclass(frozen=True)
class Target:
    entity_id: str  # "" in a RunBillingCycle for all customers
    month: BillingMonth

    def __str__(self) -> str:
        return f"{self.entity_id or 'all entities'} {self.month}"


def parse_month(text: str) -> BillingMonth:
    year, month = text.split("-")
    return BillingMonth(int(year), int(month))


class BillingClose:
    def __init__(
        self,
        cycle: BillingCycle,
        billing: SqlBillingStore,
        jobs: SqlJobStore,
        runner: JobRunner,
        directory: BillingDirectory,
        usage_lag: UsageLag,
        clock: Callable[[], datetime],
    ) -> None:
        self._cycle = cycle
        # Both ends of the circuits the cycle bills, for the reconciliation report.
        self.reconciler = cycle.reconciler
        self._billing = billing
        self._jobs = jobs
        self.runner = runner
        self._directory = directory
        self._usage_lag = usage_lag
        self._clock = clock

    def handlers(self) -> dict[JobKind, Callable[[dict[str, Any], Report], dict[str, Any]]]:
        return {JobKind.RUN: self._work, JobKind.CLOSE: self._work}

    # -- starting -------------------------------------------------------------------------

    def start_run(self, request: CycleRequest, created_by: str) -> JobRecord:
        as_of = self._cycle.check(request)
        target = Target(request.billing_entity_id, request.month)
        return self.runner.submit(
            JobKind.RUN, _job_request([target], as_of, request, close=False), created_by
        )

    def start_close(
        self,
        month: BillingMonth | None,
        entity_ids: Sequence[str],
        as_of: datetime | None,
        created_by: str,
    ) -> JobRecord:
        chosen = sorted(set(entity_ids)) or sorted(self._directory.entities)
        zones = {e: self._directory.entity(e).time_zone for e in chosen}  # NOT_FOUND names
        months = (
            {e: month for e in chosen} if month is not None else close_months(self._clock(), zones)
        )
        targets = [Target(e, months[e]) for e in chosen]
        checked = self._cycle.check(CycleRequest(month=targets[0].month, as_of=as_of))
        return self.runner.submit(
            JobKind.CLOSE,
            _job_request(targets, checked, CycleRequest(month=targets[0].month), close=True),
            created_by,
        )

    # -- the job's work (in the job worker's thread) ----------------------------------------

    def _work(self, request: dict[str, Any], report: Report) -> dict[str, Any]:
        targets = [Target(t["entity"], parse_month(t["month"])) for t in request["targets"]]
        as_of = datetime.fromisoformat(request["as_of"])
        summaries: list[Summary] = []
        warnings: list[CloseWarning] = []
        for done, target in enumerate(targets):
            cycle_request = CycleRequest(
                month=target.month,
                billing_entity_id=target.entity_id,
                as_of=as_of,
                tenant_ids=request["tenant_ids"],
                dry_run=request["dry_run"],
            )
            for message in self._cycle.run(cycle_request):
                if isinstance(message, Progress):
                    report(_progress_record(message, target, done, len(targets)))
                else:
                    summaries.append(message)
                    warnings += message.warnings
            if request["close"]:
                warnings += self.completeness(target.month, target.entity_id).warnings()
        return {
            "summaries": [summary_record(s) for s in summaries],
            # The usage consumer's lag is the same warning for every entity: once.
            "warnings": [warning_record(w) for w in dict.fromkeys(warnings)],
        }

    # -- completeness ---------------------------------------------------------------------

    def completeness(self, month: BillingMonth, entity_id: str = "") -> Completeness:
        entities = (
            [self._directory.entity(entity_id)]
            if entity_id
            else list(self._directory.entities.values())
        )
        ids = {e.id for e in entities}
        zones = [e.time_zone for e in entities] + [
            c.time_zone for c in self._directory.customers.values() if c.entity.id in ids
        ]
        frontiers = [MeterFrontier(r, end) for r, end in self._billing.newest_usage()]
        return Completeness(month, month_end(month, zones), frontiers, self._usage_lag())

    # -- finalisation ---------------------------------------------------------------------

    def finalize(
        self, job_id: str, month: BillingMonth | None, override_reason: str, by: str
    ) -> Finalization:
        job = self._close_to_finalize(job_id, month)
        drafts = self._drafts_of(job)
        warnings = warnings_of(job)
        reason = may_finalise(warnings, override_reason)
        now = self._clock()
        record = Finalization(
            id="fin-" + str(uuid.uuid4()),
            job_id=job.id,
            months=[t["month"] for t in job.request["targets"]],
            warnings=[warning_record(w) for w in warnings],
            override_reason=reason or "",
            overridden_by=by if warnings else "",
            finalized_by=by,
            created_at=now,
        )
        self._jobs.record_finalization(record)
        finalized = []
        for invoice in drafts:
            if invoice.state is InvoiceState.DRAFT:
                entity = self._directory.entity(invoice.billing_entity_id)
                self._billing.finalize(
                    invoice.id, now, entity.invoice_prefix, entity.payment_terms_days
                )
            finalized.append(invoice.id)
        self._jobs.finalized_invoices(record.id, finalized)
        return Finalization(**{**record.__dict__, "invoice_ids": finalized})

    def _drafts_of(self, job: JobRecord) -> list[StoredInvoice]:
        """The close's invoices, refused if a later run recomputed a draft: the close's
        warnings would not be about what gets finalised."""
        runs = {s["run_id"] for s in job.result["summaries"]}
        invoices = []
        for summary in job.result["summaries"]:
            for invoice_id in summary["invoice_ids"]:
                invoice = self._billing.invoice(invoice_id)
                if invoice is None:
                    continue
                if invoice.state is InvoiceState.DRAFT and invoice.billing_run_id not in runs:
                    raise FailedPrecondition(
                        f"invoice {invoice_id} was recomputed by run {invoice.billing_run_id} "
                        f"after close {job.id}: close the month again and finalise that close"
                    )
                invoices.append(invoice)
        return invoices

    def _close_to_finalize(self, job_id: str, month: BillingMonth | None) -> JobRecord:
        if job_id:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"billing job {job_id} does not exist")
        elif month is not None:
            found = next(
                (
                    j
                    for j in self._jobs.recent_closes()
                    if str(month) in {t["month"] for t in j.request["targets"]}
                    and not j.request["dry_run"]
                ),
                None,
            )
            if found is None:
                raise FailedPrecondition(
                    f"no finished close of {month}: run `idcctl billing close --month {month}` "
                    "first"
                )
            job = found
        else:
            raise InvalidArgument.for_field("job_id", "give the close's job id or a month")
        if job.kind is not JobKind.CLOSE:
            raise FailedPrecondition(f"billing job {job.id} is a run, not a close")
        if job.state is not JobState.SUCCEEDED:
            raise FailedPrecondition(
                f"billing job {job.id} is {job.state.value}, not SUCCEEDED: close again"
            )
        if job.request["dry_run"]:
            raise FailedPrecondition(f"billing job {job.id} was a dry run: it stored nothing")
        return job


def _job_request(
    targets: Sequence[Target], as_of: datetime, request: CycleRequest, *, close: bool
) -> dict[str, Any]:
    return {
        "targets": [{"entity": t.entity_id, "month": str(t.month)} for t in targets],
        "as_of": as_of.isoformat(),
        "tenant_ids": sorted(set(request.tenant_ids)),
        "dry_run": request.dry_run,
        "close": close,
    }


def _progress_record(progress: Progress, target: Target, done: int, total: int) -> dict[str, Any]:
    return {
        "stage": progress.stage,
        "circuits_total": progress.circuits_total,
        "circuits_done": progress.circuits_done,
        "invoices_total": progress.invoices_total,
        "invoices_done": progress.invoices_done,
        "message": progress.message,
        "target": str(target),
        "targets_done": done,
        "targets_total": total,
    }


def warning_record(warning: CloseWarning) -> dict[str, str]:
    return {"kind": warning.kind.value, "subject": warning.subject, "message": warning.message}


def warning_from(record: dict[str, str]) -> CloseWarning:
    return CloseWarning(WarningKind(record["kind"]), record["subject"], record["message"])


def warnings_of(job: JobRecord) -> list[CloseWarning]:
    return [warning_from(w) for w in job.result.get("warnings", [])]


def summary_record(summary: Summary) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "month": str(summary.month),
        "billing_entity_id": summary.billing_entity_id,
        "as_of": summary.as_of.isoformat(),
        "dry_run": summary.dry_run,
        **summary.as_record(),
        # The differences as the API shows them (a Reconciliation does not read back).
        "reconciliation": [
            json_format.MessageToDict(reconciliation_proto(r))
            for r in summary.reconciliation_differences
        ],
    }


def summary_from(record: dict[str, Any]) -> Summary:
    return Summary(
        run_id=record["run_id"],
        month=parse_month(record["month"]),
        billing_entity_id=record["billing_entity_id"],
        as_of=datetime.fromisoformat(record["as_of"]),
        dry_run=record["dry_run"],
        created=record["created"],
        updated=record["updated"],
        unchanged=record["unchanged"],
        skipped_finalized=record["skipped_finalized"],
        adjustment_lines=record["adjustment_lines"],
        circuits_billed=record["circuits_billed"],
        circuits_scanned=record["circuits_scanned"],
        sandbox_left_out=record.get("sandbox_left_out", 0),
        invoice_ids=list(record["invoice_ids"]),
        totals={c: Decimal(a) for c, a in record["totals"].items()},
        warnings=[warning_from(w) for w in record["warnings"]],
    )
