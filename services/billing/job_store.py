"""SQL repository of billing jobs and close finalisations (SQLite and PostgreSQL).

A job is claimed with a conditional update (QUEUED -> RUNNING), so of several billing
processes exactly one runs it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.billing.domain.jobs import JobKind, JobState
from services.billing.tables import BillingJobRow, CloseFinalizationRow
from services.common.db import transaction
from services.common.timestamps import as_utc

# How many finished closes a finalisation by month looks through for the newest one.
RECENT_CLOSES = 200


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: JobKind
    state: JobState
    request: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any]
    error: str
    error_code: str
    created_by: str
    owner: str
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Finalization:
    id: str
    job_id: str
    months: list[str]
    warnings: list[dict[str, str]]
    override_reason: str
    overridden_by: str
    finalized_by: str
    created_at: datetime
    invoice_ids: list[str] = field(default_factory=list)


class SqlJobStore:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory

    def create(
        self,
        job_id: str,
        kind: JobKind,
        request: dict[str, Any],
        created_by: str,
        now: datetime,
    ) -> JobRecord:
        with transaction(self._factory) as session:
            row = BillingJobRow(
                id=job_id,
                kind=kind.value,
                state=JobState.QUEUED.value,
                request=json.dumps(request),
                progress="{}",
                result="{}",
                error="",
                error_code="",
                created_by=created_by[:200],
                owner="",
                created_at=now,
                started_at=None,
                heartbeat_at=now,
                finished_at=None,
            )
            session.add(row)
            session.flush()
            return _record(row)

    def get(self, job_id: str) -> JobRecord | None:
        with self._factory() as session:
            row = session.get(BillingJobRow, job_id)
            return None if row is None else _record(row)

    def claim_next(self, owner: str, now: datetime) -> JobRecord | None:
        """The oldest QUEUED job, now RUNNING for ``owner``; None if there is none."""
        with self._factory() as session:
            queued = session.scalars(
                select(BillingJobRow.id)
                .where(BillingJobRow.state == JobState.QUEUED.value)
                .order_by(BillingJobRow.created_at, BillingJobRow.id)
                .limit(5)
            ).all()
        for job_id in queued:
            with transaction(self._factory) as session:
                claimed = session.execute(
                    update(BillingJobRow)
                    .where(BillingJobRow.id == job_id, BillingJobRow.state == JobState.QUEUED.value)
                    .values(
                        state=JobState.RUNNING.value,
                        owner=owner[:200],
                        started_at=now,
                        heartbeat_at=now,
                    )
                ).rowcount  # type: ignore[attr-defined]
            if claimed:
                return self.get(job_id)
        return None

    def beat(self, job_id: str, now: datetime, progress: dict[str, Any] | None = None) -> None:
        values: dict[str, Any] = {"heartbeat_at": now}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with transaction(self._factory) as session:
            session.execute(
                update(BillingJobRow)
                .where(BillingJobRow.id == job_id, BillingJobRow.state == JobState.RUNNING.value)
                .values(**values)
            )

    def finish(
        self,
        job_id: str,
        state: JobState,
        now: datetime,
        *,
        result: dict[str, Any] | None = None,
        error: str = "",
        error_code: str = "",
    ) -> None:
        """Moves an unfinished job to ``state`` (a job already finished stays as it is)."""
        values: dict[str, Any] = {
            "state": state.value,
            "finished_at": now,
            "heartbeat_at": now,
            "error": error,
            "error_code": error_code,
        }
        if result is not None:
            values["result"] = json.dumps(result)
        unfinished = [JobState.QUEUED.value, JobState.RUNNING.value]
        with transaction(self._factory) as session:
            session.execute(
                update(BillingJobRow)
                .where(BillingJobRow.id == job_id, BillingJobRow.state.in_(unfinished))
                .values(**values)
            )

    def running(self) -> list[JobRecord]:
        with self._factory() as session:
            rows = session.scalars(
                select(BillingJobRow).where(BillingJobRow.state == JobState.RUNNING.value)
            ).all()
            return [_record(r) for r in rows]

    def recent_closes(self) -> list[JobRecord]:
        """Finished, successful closes, newest first."""
        with self._factory() as session:
            rows = session.scalars(
                select(BillingJobRow)
                .where(
                    BillingJobRow.kind == JobKind.CLOSE.value,
                    BillingJobRow.state == JobState.SUCCEEDED.value,
                )
                .order_by(BillingJobRow.created_at.desc())
                .limit(RECENT_CLOSES)
            ).all()
            return [_record(r) for r in rows]

    def record_finalization(self, record: Finalization) -> None:
        with transaction(self._factory) as session:
            session.add(
                CloseFinalizationRow(
                    id=record.id,
                    job_id=record.job_id,
                    months=json.dumps(record.months),
                    warnings=json.dumps(record.warnings),
                    override_reason=record.override_reason,
                    overridden_by=record.overridden_by[:200],
                    finalized_by=record.finalized_by[:200],
                    invoice_ids=json.dumps(record.invoice_ids),
                    created_at=record.created_at,
                )
            )

    def finalized_invoices(self, finalization_id: str, invoice_ids: Sequence[str]) -> None:
        with transaction(self._factory) as session:
            session.execute(
                update(CloseFinalizationRow)
                .where(CloseFinalizationRow.id == finalization_id)
                .values(invoice_ids=json.dumps(list(invoice_ids)))
            )

    def finalizations(self, job_id: str) -> list[Finalization]:
        with self._factory() as session:
            rows = session.scalars(
                select(CloseFinalizationRow)
                .where(CloseFinalizationRow.job_id == job_id)
                .order_by(CloseFinalizationRow.created_at)
            ).all()
            return [
                Finalization(
                    id=r.id,
                    job_id=r.job_id,
                    months=json.loads(r.months),
                    warnings=json.loads(r.warnings),
                    override_reason=r.override_reason,
                    overridden_by=r.overridden_by,
                    finalized_by=r.finalized_by,
                    created_at=as_utc(r.created_at),
                    invoice_ids=json.loads(r.invoice_ids),
                )
                for r in rows
            ]


def _record(row: BillingJobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=JobKind(row.kind),
        state=JobState(row.state),
        request=json.loads(row.request),
        progress=json.loads(row.progress),
        result=json.loads(row.result),
        error=row.error,
        error_code=row.error_code,
        created_by=row.created_by,
        owner=row.owner,
        created_at=as_utc(row.created_at),
        started_at=None if row.started_at is None else as_utc(row.started_at),
        heartbeat_at=as_utc(row.heartbeat_at),
        finished_at=None if row.finished_at is None else as_utc(row.finished_at),
    )
