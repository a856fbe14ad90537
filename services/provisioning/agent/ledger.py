"""What a router's worker records: its queue, its batches, and each step's replies and log
entries, every write fenced by the router's lease (one transaction per step)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import provisioning_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as ops_pb2
from services.common.events import outbox
from services.common.timestamps import to_timestamp
from services.provisioning.agent.jobs import CONFIRM, PREPARE, ROLLBACK, Job, trace_id_of
from services.provisioning.domain.batch import (
    IN_RUNNING_FOR_GOOD,
    UNRESOLVED,
    Batch,
    BatchState,
    WaitingReply,
)
from services.provisioning.domain.faults import RouterFault
from services.provisioning.inventory import Device
from services.provisioning.lease_store import SqlRouterLease
from services.provisioning.tables import AgentBatch, AgentCommand, LogEntry, utcnow

MAX_BATCH = 200
STEP_OF_ACTION = {
    PREPARE: ops_pb2.PROVISIONING_STEP_PREPARE,
    CONFIRM: ops_pb2.PROVISIONING_STEP_CONFIRM,
    ROLLBACK: ops_pb2.PROVISIONING_STEP_ROLLBACK,
}


@dataclass
class StepResult:
    """The answer to one command."""

    job: Job
    success: bool
    fault: RouterFault | None = None
    persist_id: str = ""
    sha256: str = ""
    expire_at: datetime | None = None
    duration_ms: int = 0
    message: str = ""


def aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; every stored one is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _batch(row: AgentBatch) -> Batch:
    return Batch.from_json(
        row.persist_id, row.router_name, row.state, aware(row.expire_at), row.members
    )


def _job(row: AgentCommand) -> Job:
    command = provisioning_pb2.ProvisioningCommand()
    command.ParseFromString(row.command)
    return Job(row.id, command, row.traceparent)


@dataclass
class Ledger:
    """One router's records."""

    device: Device
    session_factory: sessionmaker[Session]
    lease: SqlRouterLease
    replies_topic: str

    # -- reads --------------------------------------------------------------------------

    def pending_jobs(self) -> list[Job]:
        with self.session_factory() as db:
            rows = db.scalars(
                select(AgentCommand)
                .where(AgentCommand.router_name == self.device.name, AgentCommand.done_at.is_(None))
                .order_by(AgentCommand.id)
                .limit(MAX_BATCH * 2)
            ).all()
            return [_job(row) for row in rows]

    def job(self, waiting: WaitingReply) -> Job:
        with self.session_factory() as db:
            row = db.get(AgentCommand, waiting.row_id)
            assert row is not None, f"queued command {waiting.row_id} is gone"
            return Job(row.id, _job(row).command, waiting.traceparent)

    def unresolved_batches(self) -> list[Batch]:
        """Batches open on the router or waiting to be settled, oldest first."""
        return [batch for batch, _ in self.unresolved_since()]

    def unresolved_since(self) -> list[tuple[Batch, datetime]]:
        """Unresolved batches, oldest first, with the time of their last change."""
        with self.session_factory() as db:
            rows = db.scalars(
                select(AgentBatch)
                .where(
                    AgentBatch.router_name == self.device.name,
                    AgentBatch.state.in_([s.value for s in UNRESOLVED]),
                )
                .order_by(AgentBatch.created_at)
            )
            return [(_batch(row), aware(row.updated_at)) for row in rows]

    def open_batch(self) -> Batch | None:
        return next((b for b in self.unresolved_batches() if b.is_open), None)

    def find_member(self, command: provisioning_pb2.ProvisioningCommand) -> Batch | None:
        """The newest batch holding this saga's circuit on this router."""
        with self.session_factory() as db:
            query = select(AgentBatch).where(AgentBatch.router_name == self.device.name)
            if command.persist_id:
                query = query.where(AgentBatch.persist_id == command.persist_id)
            for row in db.scalars(query.order_by(AgentBatch.created_at.desc()).limit(50)):
                member = row.members.get(command.circuit_id)
                if member and member["saga_id"] == command.saga_id:
                    return _batch(row)
        return None

    def landed(self, jobs: Sequence[Job]) -> dict[int, Batch]:
        """Per queued job (row id), the ended batch of this router that left its saga's
        circuit in running for good, when that is the newest batch holding it: a PREPARE
        whose commit landed while its agent died before answering it (the agent that took
        the router over settled the batch). One read of the router's newest batches."""
        with self.session_factory() as db:
            rows = db.scalars(
                select(AgentBatch)
                .where(AgentBatch.router_name == self.device.name)
                .order_by(AgentBatch.created_at.desc())
                .limit(50)
            ).all()
            batches = [_batch(row) for row in rows]
        found: dict[int, Batch] = {}
        for job in jobs:
            saga_id = job.command.saga_id
            batch = next((b for b in batches if b.holds(job.circuit_id, saga_id)), None)
            if (
                batch is not None
                and batch.state is BatchState.CLOSED
                and batch.members[job.circuit_id].state in IN_RUNNING_FOR_GOOD
            ):
                found[job.row_id] = batch
        return found

    # -- writes -------------------------------------------------------------------------

    def save(self, batch: Batch) -> None:
        """Record a batch on its own (before a commit that may not be answered)."""
        with self.session_factory() as db, db.begin():
            self.lease.fence(db)
            self._store(db, batch)

    def finish(
        self,
        results: Sequence[StepResult],
        batch: Batch | None = None,
        done_jobs: Sequence[Job] = (),
    ) -> None:
        """Store the batch, reply to and log each result, mark the jobs done: one
        transaction. A job neither answered nor listed in ``done_jobs`` stays queued."""
        now = utcnow()
        with self.session_factory() as db, db.begin():
            self.lease.fence(db)
            if batch is not None:
                self._store(db, batch)
            ids = {r.job.row_id for r in results} | {j.row_id for j in done_jobs}
            if ids:
                for row in db.scalars(select(AgentCommand).where(AgentCommand.id.in_(ids))):
                    row.done_at = now
            for result in results:
                self._reply(db, result, now)

    def _store(self, db: Session, batch: Batch) -> None:
        db.merge(
            AgentBatch(
                persist_id=batch.persist_id,
                router_name=batch.router_name,
                state=batch.state.value,
                expire_at=batch.expire_at,
                members=batch.members_json(),
                updated_at=utcnow(),
            )
        )

    def _reply(self, db: Session, result: StepResult, now: datetime) -> None:
        command = result.job.command
        reply = provisioning_pb2.ProvisioningReply(
            occurred_at=to_timestamp(now),
            command_event_id=command.event_id,
            saga_id=command.saga_id,
            circuit_id=command.circuit_id,
            action=command.action,
            operation=command.operation,
            side=self.device.side.value,
            telco_id=self.device.telco,
            router_name=self.device.name,
            success=result.success,
            persist_id=result.persist_id,
            payload_sha256=result.sha256,
        )
        if result.fault is not None:
            reply.error.CopyFrom(result.fault.to_proto())
        if result.expire_at is not None:
            reply.confirm_expire_time.CopyFrom(to_timestamp(result.expire_at))
        token = otel_context.attach(_reply_context(result.job))
        try:
            row = outbox.add(db, self.replies_topic, command.circuit_id, reply)
        finally:
            otel_context.detach(token)
        reply.event_id = row.event_id
        db.add(
            LogEntry(
                time=now,
                saga_id=command.saga_id,
                order_id=command.order_id,
                circuit_id=command.circuit_id,
                operation=command.operation,
                step=STEP_OF_ACTION.get(command.action, 0),
                router_name=self.device.name,
                side=self.device.side.value,
                outcome=ops_pb2.PROVISIONING_OUTCOME_SUCCEEDED
                if result.success
                else ops_pb2.PROVISIONING_OUTCOME_FAILED,
                duration_ms=result.duration_ms,
                persist_id=result.persist_id or command.persist_id,
                payload_sha256=result.sha256,
                trace_id=trace_id_of(result.job.traceparent),
                error=result.fault.to_proto().SerializeToString() if result.fault else b"",
                message=result.message,
                actor=command.actor,
            )
        )


def _reply_context(job: Job) -> otel_context.Context:
    """The current context when it is in the job's trace (its step's span), else the
    context the job was consumed in (a job answered in another job's step)."""
    current = trace.get_current_span().get_span_context()
    if current.is_valid and format(current.trace_id, "032x") == trace_id_of(job.traceparent):
        return otel_context.get_current()
    return job.trace_context()
