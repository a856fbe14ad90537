"""Per-telco router agent: turns saga commands into NETCONF transactions on its routers.

What happens on a router, in one place:

* Commands arrive on the telco's command topic; the consumer only queues them in
  ``agent_commands`` (in the inbox transaction, so a redelivery queues nothing twice).
* One worker thread per router drains its queue, so operations on a router are serialised
  and routers work in parallel. Several agents of a telco (one database) each run a worker
  per router, but only the holder of the router's lease (lease.py) acts; the others wait,
  and one of them takes over when the holder dies or stops. A router has at most one
  pending confirmed commit (the agent refuses another lock while one is pending), so every
  PREPARE queued at that moment goes into one **batch**: lock the candidate, one
  edit-config of all the circuits' payloads merged (merge.py; when the router refuses it,
  halves are tried until a refused payload fails that circuit only), one confirmed commit
  with a persist id and a timeout, lock kept until the batch is resolved.
* CONFIRM of any member commits the batch (confirming commit with the persist id), after
  editing the inverse of members already rolled back into the candidate. Members still
  undecided are then committed; a later ROLLBACK of one of them applies its inverse in a
  transaction of its own.
* ROLLBACK of the last undecided member of an open batch cancels the confirmed commit
  (cancel-commit with the persist id); earlier ROLLBACKs edit the member's inverse into the
  candidate and are answered when the batch resolves.
* A batch nobody resolves is cancelled by the agent just before its timeout. A batch found
  open by a worker that acquires the router's lease (at start, or taking over from a dead
  peer) is settled with its persist id: confirmed when a member's CONFIRM is queued,
  cancelled otherwise (lease.settle_left_open), and read back from running when the
  previous holder ended it before recording so. RFC 6241 says the router reverts by itself
  at the timeout, but the devstack's yuma123 netconfd 2.13 does not (checked: with or
  without persist, session open, closed or dropped, 25 s past a 3 s timeout), so the
  agents' own cancel, and the takeover, are what end an unresolved commit there.
* After every step the running configuration is read back and compared with what the step
  meant to leave there; a difference is a VERIFICATION_FAILED reply.

Tracing: a command is queued with the context of the span that consumed it; the worker
runs each step in a span that continues it (a batch's span continues its first command's
trace and links the others), the NETCONF operations are its children, and each reply
goes into the outbox in the trace of the command it answers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import provisioning_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as ops_pb2
from services.common.errors import InvalidArgument
from services.common.events import Envelope, outbox
from services.common.events.envelope import HEADER_TRACEPARENT, capture_trace_headers
from services.common.grpc_server import Worker
from services.provisioning.crashpoints import AGENT_AFTER_CONFIRMED_COMMIT, crash_point
from services.provisioning.domain.circuits import Operation, circuit_end
from services.provisioning.domain.faults import (
    FaultKind,
    PayloadMismatch,
    RouterFailure,
    RouterFault,
)
from services.provisioning.domain.lease import LeaseTerms, LeftOpen, Move, Tenure, settle_left_open
from services.provisioning.domain.merge import MergeConflict, merge_configs
from services.provisioning.domain.observe import (
    differences,
    intended_leaves,
    running_filter,
    running_subinterfaces,
)
from services.provisioning.inventory import Device
from services.provisioning.lease_store import LeaseLost, SqlRouterLease, new_holder
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from services.provisioning.router import CONFIRMED_COMMIT_NOT_ACTIVE
from services.provisioning.tables import AgentBatch, AgentCommand, LogEntry, utcnow

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

PREPARE = provisioning_pb2.PROVISIONING_ACTION_PREPARE
CONFIRM = provisioning_pb2.PROVISIONING_ACTION_CONFIRM
ROLLBACK = provisioning_pb2.PROVISIONING_ACTION_ROLLBACK
STEP_OF_ACTION = {
    PREPARE: ops_pb2.PROVISIONING_STEP_PREPARE,
    CONFIRM: ops_pb2.PROVISIONING_STEP_CONFIRM,
    ROLLBACK: ops_pb2.PROVISIONING_STEP_ROLLBACK,
}
DEFAULT_CONFIRM_TIMEOUT_S = 120
MAX_BATCH = 200
# Cancel an unresolved batch this long before the router's own timeout would revert it.
EXPIRY_MARGIN_S = 1.0

# Member states in a batch.
UNDECIDED = "undecided"  # prepared, no decision yet
ROLLED_BACK_IN_CANDIDATE = "rollback-edited"  # inverse edited into the candidate
COMMITTED = "committed"  # in running for good, no decision yet
CONFIRMED = "confirmed"
REVERTED = "reverted"  # not in running (cancelled, expired, or inverse applied)

# Batch states.
OPEN = "open"
CLOSED = "closed"


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def trace_id_of(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 3 else ""


@dataclass
class Job:
    """A queued command, decoded."""

    row_id: int
    command: provisioning_pb2.ProvisioningCommand
    traceparent: str

    def trace_context(self) -> otel_context.Context:
        """The context the command was consumed in (empty when it carried none)."""
        return propagate.extract({HEADER_TRACEPARENT: self.traceparent})


@dataclass
class Intent:
    """What a PREPARE means on this router: the payload and how to undo it."""

    job: Job
    operation: Operation
    payload: str
    sha256: str
    inverse: str
    # Leaves the circuit must have in running after the step (None: absent), and before.
    after: dict[str, str] | None
    before: dict[str, str] | None
    key: tuple[str, int]


@dataclass
class StepResult:
    job: Job
    success: bool
    fault: RouterFault | None = None
    persist_id: str = ""
    sha256: str = ""
    expire_at: datetime | None = None
    duration_ms: int = 0
    message: str = ""


def _prepared(
    intents: Sequence[Intent], persist_id: str, expire_at: datetime, duration_ms: int,
    message: str,
) -> list[StepResult]:
    """Successful PREPARE results of ``intents``, all pending in the batch ``persist_id``."""
    return [
        StepResult(
            i.job,
            True,
            persist_id=persist_id,
            sha256=i.sha256,
            expire_at=expire_at,
            duration_ms=duration_ms,
            message=message,
        )
        for i in intents
    ]


class CommandQueue:
    """The consumer handler: queue each command for its router's worker."""

    def __init__(self, telco: str, routers: Iterable[str], wake: Callable[[str], None]) -> None:
        self._telco = telco
        self._routers = set(routers)
        self._wake = wake

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        if not isinstance(event, provisioning_pb2.ProvisioningCommand):
            return
        router = event.target_router_name
        if router not in self._routers or event.target_telco_id != self._telco:
            raise InvalidArgument(
                f"command {event.event_id} is for router {router!r} of telco "
                f"{event.target_telco_id!r}, not one of this agent's ({self._telco})"
            )
        session.add(
            AgentCommand(
                event_id=envelope.event_id,
                router_name=router,
                circuit_id=event.circuit_id,
                action=event.action,
                command=event.SerializeToString(),
                # The consuming span's context (a child of the command's producer), so the
                # worker's step continues the trace below it.
                traceparent=capture_trace_headers().get(HEADER_TRACEPARENT)
                or envelope.traceparent
                or "",
            )
        )
        # After the commit: a worker woken before it would find nothing queued yet and
        # sleep its poll interval.
        sa_event.listen(session, "after_commit", lambda _s: self._wake(router), once=True)


@dataclass
class RouterWorker(Worker):
    """Drains one router's command queue while it holds the router's lease; the only user
    of that router's session."""

    device: Device
    session: NetconfSession
    session_factory: sessionmaker[Session]
    renderer: Renderer
    replies_topic: str
    poll_interval_s: float = 0.05
    lease_terms: LeaseTerms = field(default_factory=LeaseTerms)
    holder: str = field(default_factory=new_holder)
    wake_event: threading.Event = field(default_factory=threading.Event)
    name: str = field(init=False)
    lease: SqlRouterLease = field(init=False)
    tenure: Tenure = field(init=False)
    _claiming: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.name = f"agent:{self.device.name}"
        self.lease = SqlRouterLease(
            self.session_factory, self.device.name, self.holder, self.lease_terms
        )
        self.tenure = Tenure(self.lease_terms)

    # -- loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # Renewals on a thread of their own: a slow NETCONF step must not cost the lease.
        heartbeat = threading.Thread(
            target=self._keep_lease, args=(stop,), name=f"lease:{self.device.name}", daemon=True
        )
        heartbeat.start()
        try:
            while not stop.is_set():
                try:
                    worked = self.run_once()
                except LeaseLost as exc:
                    log.warning("%s: %s; standing down", self.device.name, exc)
                    self.tenure.lost()
                    worked = True
                except Exception:
                    log.exception("router worker %s failed; retrying", self.device.name)
                    worked = False
                    stop.wait(1.0)
                if not worked:
                    self.wake_event.wait(self.poll_interval_s)
                    self.wake_event.clear()
        finally:
            heartbeat.join()
            self._let_go()

    def close(self) -> None:
        self.session.close()

    def run_once(self) -> bool:
        """Act on the router if this worker holds its lease: settle what a previous holder
        left open, then handle what is queued (and an expiring batch). True if anything
        was done."""
        move = self._lease_move()
        if move is Move.WAIT:
            return False
        if move is Move.STAND_DOWN:
            log.warning("%s: lease lost; releasing the router to its holder", self.device.name)
            self._stand_down()
            return True
        if move is Move.TAKE_OVER:
            log.info("%s: driven by %s from now on", self.device.name, self.holder)
            self._settle_left_open()
            self.tenure.took_over()
            self._work()
            return True
        return self._work()

    # -- lease --------------------------------------------------------------------------

    def _lease_move(self) -> Move:
        self._claim_if_due(only_when_holding=False)
        return self.tenure.next_move(time.monotonic())

    def _claim_if_due(self, *, only_when_holding: bool) -> None:
        with self._claiming:
            asked_at = time.monotonic()
            if not self.tenure.claim_due(asked_at):
                return
            if only_when_holding and not self.tenure.holds(asked_at):
                return
            try:
                granted = self.lease.claim()
            except Exception as exc:
                log.warning("%s: lease claim got no answer: %s", self.device.name, exc)
                self.tenure.unanswered(asked_at)
                return
            self.tenure.claimed(granted, asked_at)

    def _keep_lease(self, stop: threading.Event) -> None:
        while not stop.wait(self.lease_terms.renew_every_s / 2):
            self._claim_if_due(only_when_holding=True)

    def _stand_down(self) -> None:
        """The lease is gone: close the session, which ends its candidate lock, so the new
        holder can lock (a batch left open is the new holder's to settle). Not an unlock
        first: on a dropped session that would open a new one."""
        self.session.close()
        self.tenure.stood_down()

    def _let_go(self) -> None:
        """Clean stop: release the router session, and the lease so a peer takes over now."""
        if self.tenure.next_move(time.monotonic()) in (Move.WORK, Move.STAND_DOWN):
            self._stand_down()
        try:
            self.lease.release()
        except Exception as exc:
            log.warning("%s: releasing the lease: %s", self.device.name, exc)

    # -- work ---------------------------------------------------------------------------

    def _work(self) -> bool:
        jobs = self._pending_jobs()
        expired = self._cancel_expiring_batch()
        if not jobs:
            return expired
        # A decision waits for an earlier PREPARE of its circuit still queued (a ROLLBACK
        # sent at the coordinator's deadline must undo that prepare, not run before it).
        queued_prepares = [j for j in jobs if j.command.action == PREPARE]
        decisions = [
            j
            for j in jobs
            if j.command.action in (CONFIRM, ROLLBACK)
            and not any(
                p.row_id < j.row_id and p.command.circuit_id == j.command.circuit_id
                for p in queued_prepares
            )
        ]
        # Consecutive CONFIRMs are one step (one confirming commit, one read-back); the
        # order between confirms and rollbacks is kept.
        confirms: list[Job] = []
        for job in decisions:
            if job.command.action == CONFIRM:
                confirms.append(job)
                continue
            self._confirm_all(confirms)
            confirms = []
            with self._step_span("rollback", [job]):
                self._rollback(job)
        self._confirm_all(confirms)
        # PREPAREs never wait for decisions: they open a batch, or join the open one (a
        # router holds one pending confirmed commit; a PREPARE waiting for it while the
        # other router's batch waits for this one's members would deadlock both). A
        # circuit already in the open batch (an earlier round) waits for it to resolve.
        batch = self._open_batch()
        members = set(batch.members) if batch is not None else set()
        # The last ROLLBACK queued per saga and circuit: a PREPARE queued before it is moot.
        rollbacks = {
            (j.command.saga_id, j.command.circuit_id): j.row_id
            for j in jobs
            if j.command.action == ROLLBACK
        }
        prepares = self._batchable(
            [j for j in queued_prepares if j.command.circuit_id not in members]
        )
        if prepares:
            with self._step_span("prepare", prepares):
                self._prepare(prepares, batch, rollbacks)
        elif not decisions:
            return False
        return True

    def _confirm_all(self, jobs: list[Job]) -> None:
        if jobs:
            with self._step_span("confirm", jobs):
                self._confirm(jobs)

    # -- tracing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _step_span(self, step: str, jobs: Sequence[Job]) -> Iterator[None]:
        """A span for one step of the worker, continuing the first job's trace; the other
        jobs of a batch are linked (the batch's NETCONF operations have one parent)."""
        lead, others = (jobs[0], jobs[1:]) if jobs else (None, ())
        links = [
            Link(linked)
            for linked in (
                trace.get_current_span(j.trace_context()).get_span_context() for j in others
            )
            if linked.is_valid
        ]
        attributes: dict[str, str | int] = {
            "idc.router.name": self.device.name,
            "idc.agent.step": step,
            "idc.agent.batch_size": len(jobs),
        }
        if lead is not None:
            attributes["idc.circuit.id"] = lead.command.circuit_id
            attributes["idc.saga.id"] = lead.command.saga_id
        with tracer.start_as_current_span(
            f"agent {step} {self.device.name}",
            context=lead.trace_context() if lead is not None else None,
            links=links,
            attributes=attributes,
        ):
            yield

    @staticmethod
    def _reply_context(job: Job) -> otel_context.Context:
        """The current context when it is in the job's trace (its step's span), else the
        context the job was consumed in (a job answered in another job's step)."""
        current = trace.get_current_span().get_span_context()
        if current.is_valid and format(current.trace_id, "032x") == trace_id_of(job.traceparent):
            return otel_context.get_current()
        return job.trace_context()

    # -- persistence --------------------------------------------------------------------

    def _pending_jobs(self) -> list[Job]:
        with self.session_factory() as db:
            rows = db.scalars(
                select(AgentCommand)
                .where(AgentCommand.router_name == self.device.name, AgentCommand.done_at.is_(None))
                .order_by(AgentCommand.id)
                .limit(MAX_BATCH * 2)
            ).all()
        jobs = []
        for row in rows:
            command = provisioning_pb2.ProvisioningCommand()
            command.ParseFromString(row.command)
            jobs.append(Job(row.id, command, row.traceparent))
        return jobs

    def _open_batch(self) -> AgentBatch | None:
        batches = self._open_batches()
        return batches[0] if batches else None

    def _open_batches(self) -> list[AgentBatch]:
        with self.session_factory() as db:
            return list(
                db.scalars(
                    select(AgentBatch)
                    .where(AgentBatch.router_name == self.device.name, AgentBatch.state == OPEN)
                    .order_by(AgentBatch.created_at)
                )
            )

    def _find_member(self, command: provisioning_pb2.ProvisioningCommand) -> AgentBatch | None:
        """The newest batch holding this saga's circuit on this router."""
        with self.session_factory() as db:
            query = select(AgentBatch).where(AgentBatch.router_name == self.device.name)
            if command.persist_id:
                query = query.where(AgentBatch.persist_id == command.persist_id)
            for batch in db.scalars(query.order_by(AgentBatch.created_at.desc()).limit(50)):
                member = batch.members.get(command.circuit_id)
                if member and member["saga_id"] == command.saga_id:
                    return batch
        return None

    def _save_batch(self, batch: AgentBatch, db: Session) -> None:
        batch.updated_at = utcnow()
        db.merge(batch)

    def _finish(
        self,
        results: Sequence[StepResult],
        batch: AgentBatch | None = None,
        done_jobs: Sequence[Job] = (),
    ) -> None:
        """Store the batch, reply to and log each result, mark the jobs done: one transaction."""
        now = utcnow()
        with self.session_factory() as db, db.begin():
            self.lease.fence(db)
            if batch is not None:
                self._save_batch(batch, db)
            ids = {r.job.row_id for r in results} | {j.row_id for j in done_jobs}
            for row in db.scalars(select(AgentCommand).where(AgentCommand.id.in_(ids))):
                row.done_at = now
            for result in results:
                self._reply(db, result, now)

    def _reply(self, db: Session, result: StepResult, now: datetime) -> None:
        command = result.job.command
        reply = provisioning_pb2.ProvisioningReply(
            occurred_at=timestamp(now),
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
            reply.confirm_expire_time.CopyFrom(timestamp(result.expire_at))
        token = otel_context.attach(self._reply_context(result.job))
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
            )
        )

    # -- intents ------------------------------------------------------------------------

    def _intent(self, job: Job) -> Intent:
        """Render the command's payload and its inverse; raises RouterFailure."""
        command = job.command
        operation = Operation.from_proto(command.operation)
        side = self.device.side
        try:
            end = circuit_end(command.circuit, side)
            previous = (
                circuit_end(command.previous_circuit, side)
                if operation is Operation.MODIFY
                else None
            )
        except InvalidArgument as exc:
            raise RouterFailure(self._fault(FaultKind.INTERNAL, exc.message)) from exc
        if end.router_name != self.device.name:
            raise RouterFailure(
                self._fault(
                    FaultKind.INTERNAL,
                    f"circuit end is on {end.router_name}, not {self.device.name}",
                )
            )
        platform = self.device.platform
        rendered = self.renderer.render(platform, operation, end)
        if command.approved_payload_sha256 and command.approved_payload_sha256 != rendered.sha256:
            raise PayloadMismatch(
                self._fault(
                    FaultKind.PAYLOAD_MISMATCH,
                    f"rendered payload {rendered.sha256} differs from the approved "
                    f"{command.approved_payload_sha256}; the order needs approval of the new plan",
                ),
                rendered.sha256,
            )
        want = intended_leaves(platform, end)
        if operation is Operation.CREATE:
            inverse = self.renderer.render(platform, Operation.DELETE, end).content
            after, before = want, None
        elif operation is Operation.DELETE:
            inverse = self.renderer.render(platform, Operation.CREATE, end).content
            after, before = None, want
        else:
            assert previous is not None
            inverse = self.renderer.render(platform, Operation.MODIFY, previous).content
            after, before = want, intended_leaves(platform, previous)
        return Intent(
            job,
            operation,
            rendered.content,
            rendered.sha256,
            inverse,
            after,
            before,
            (end.interface, end.vlan),
        )

    def _fault(self, kind: FaultKind, message: str, *, retryable: bool = False) -> RouterFault:
        return RouterFault(kind, self.device.name, message, retryable=retryable)

    def _verify(
        self, expectations: Iterable[tuple[tuple[str, int], dict[str, str] | None]]
    ) -> RouterFault | None:
        """Read the sub-interfaces once; a fault describing the first not as expected."""
        faults = self._check(list(expectations))
        return next((f for f in faults.values() if f is not None), None)

    def _check(
        self, expectations: Sequence[tuple[tuple[str, int], dict[str, str] | None]]
    ) -> dict[tuple[str, int], RouterFault | None]:
        """Per sub-interface, a fault when running does not hold what is expected: one read
        of those sub-interfaces only. A failed read is every one's fault."""
        if not expectations:
            return {}
        try:
            running = self._running_subinterfaces(key for key, _ in expectations)
        except RouterFailure as exc:
            return {key: exc.fault for key, _ in expectations}
        faults: dict[tuple[str, int], RouterFault | None] = {}
        for key, want in expectations:
            have = running.get(key)
            fault = None
            if want is None and have is not None:
                fault = self._fault(
                    FaultKind.VERIFICATION_FAILED,
                    f"sub-interface {key[0]}.{key[1]} is still configured",
                )
            elif want is not None:
                diff = differences(want, have)
                if diff:
                    first = diff[0]
                    fault = self._fault(
                        FaultKind.VERIFICATION_FAILED,
                        f"{first.path} is {first.actual!r}, expected {first.intended!r}",
                    )
            faults[key] = faults.get(key) or fault
        return faults

    def _running_subinterfaces(
        self, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], dict[str, str]]:
        platform = self.device.platform
        return running_subinterfaces(platform, self.session.running(running_filter(platform, keys)))

    # -- PREPARE ------------------------------------------------------------------------

    def _batchable(self, prepares: list[Job]) -> list[Job]:
        """Queued PREPAREs for a batch: one per circuit (a later one waits its turn)."""
        chosen: dict[str, Job] = {}
        for job in prepares:
            chosen.setdefault(job.command.circuit_id, job)
            if len(chosen) == MAX_BATCH:
                break
        return list(chosen.values())

    def _prepare(
        self,
        jobs: list[Job],
        batch: AgentBatch | None,
        rollbacks: dict[tuple[str, str], int],
    ) -> None:
        """Render each PREPARE and put it on the router: a new batch, or into ``batch``
        (the open one). ``rollbacks``: the last queued ROLLBACK's row per saga and circuit."""
        started = time.monotonic()
        now = utcnow()
        failed: list[StepResult] = []
        intents: list[Intent] = []
        for job in jobs:
            deadline = job.command.deadline
            late = bool(deadline.seconds) and deadline.ToDatetime(UTC) < now
            undone = rollbacks.get((job.command.saga_id, job.command.circuit_id), 0) > job.row_id
            if late or undone:
                why = "arrived after its deadline" if late else "was rolled back while queued"
                failed.append(
                    StepResult(
                        job,
                        False,
                        self._fault(
                            FaultKind.TIMEOUT, f"command {why}; router untouched", retryable=True
                        ),
                    )
                )
                continue
            try:
                intents.append(self._intent(job))
            except PayloadMismatch as exc:
                failed.append(StepResult(job, False, exc.fault, sha256=exc.rendered_sha256))
            except RouterFailure as exc:
                failed.append(StepResult(job, False, exc.fault))
        if failed:
            self._finish(failed)
        if intents and batch is None:
            self._prepare_batch(intents, started)
        elif intents and batch is not None:
            self._top_up(batch, intents, started)

    @staticmethod
    def _confirm_timeout_s(intents: list[Intent]) -> int:
        return (
            max(
                (i.job.command.confirm_timeout.seconds for i in intents),
                default=DEFAULT_CONFIRM_TIMEOUT_S,
            )
            or DEFAULT_CONFIRM_TIMEOUT_S
        )

    @staticmethod
    def _member(intent: Intent) -> dict[str, object]:
        return {
            "saga_id": intent.job.command.saga_id,
            "state": UNDECIDED,
            "inverse": intent.inverse,
            "interface": intent.key[0],
            "vlan": intent.key[1],
            "after": intent.after,
            "before": intent.before,
            "sha256": intent.sha256,
        }

    def _top_up(self, batch: AgentBatch, intents: list[Intent], started: float) -> None:
        """Add circuits to the open batch (its candidate lock is held): edit them in after
        the inverses of members rolled back so far, then a follow-up confirmed commit with
        the batch's persist id. Recorded before that commit, like a new batch."""
        timeout_s = self._confirm_timeout_s(intents)
        kept = [
            m["inverse"] for m in batch.members.values() if m["state"] == ROLLED_BACK_IN_CANDIDATE
        ]
        try:
            accepted, refused = self._edit_all(intents, kept)
        except RouterFailure as exc:
            # The session (and with it the lock and the candidate) is gone: end the batch.
            self._abandon(batch, [StepResult(i.job, False, exc.fault) for i in intents])
            return
        results = list(refused)
        if not accepted:
            self._finish(results)
            return
        expire_at = utcnow() + timedelta(seconds=timeout_s)
        previous_expiry = batch.expire_at
        batch.members = {
            **batch.members,
            **{i.job.command.circuit_id: self._member(i) for i in accepted},
        }
        batch.expire_at = expire_at
        with self.session_factory() as db, db.begin():
            self.lease.fence(db)
            self._save_batch(batch, db)
        try:
            self.session.confirmed_commit_more(batch.persist_id, timeout_s)
        except RouterFailure as exc:
            fault = exc.fault
            if CONFIRMED_COMMIT_NOT_ACTIVE in fault.message:
                # The batch ended on the router (cancelled or expired): a passing failure.
                fault = self._fault(
                    FaultKind.TIMEOUT,
                    f"confirmed commit {batch.persist_id} ended before this circuit could join "
                    "it; router untouched",
                    retryable=True,
                )
            elif fault.kind is FaultKind.RPC_ERROR:
                batch.expire_at = previous_expiry
                self._top_up_refused(batch, accepted, kept, results, fault)
                return
            # Unknown whether it was applied, or the batch is gone: cancel it, new members
            # with it.
            self._abandon(batch, [*results, *(StepResult(i.job, False, fault) for i in accepted)])
            return
        for intent in accepted:
            crash_point(AGENT_AFTER_CONFIRMED_COMMIT, intent.job.command.circuit_id)
        wrong = self._verify((i.key, i.after) for i in accepted)
        duration = int((time.monotonic() - started) * 1000)
        if wrong is not None:
            self._abandon(
                batch,
                results + [StepResult(i.job, False, wrong, duration_ms=duration) for i in accepted],
            )
            return
        results += _prepared(
            accepted, batch.persist_id, expire_at, duration,
            f"joined a batch of {len(batch.members)}",
        )
        self._finish(results, batch)

    def _top_up_refused(
        self,
        batch: AgentBatch,
        accepted: list[Intent],
        kept: list[str],
        results: list[StepResult],
        fault: RouterFault,
    ) -> None:
        """The follow-up commit was refused, nothing applied: the candidate back to the
        batch's, the new members out of it; several are retried one by one so that only
        the faulty one fails."""
        joining = {i.job.command.circuit_id for i in accepted}
        batch.members = {c: m for c, m in batch.members.items() if c not in joining}
        try:
            self._reset_candidate(kept)
        except RouterFailure as exc:
            self._abandon(
                batch, [*results, *(StepResult(i.job, False, exc.fault) for i in accepted)]
            )
            return
        if len(accepted) == 1:
            self._finish([*results, StepResult(accepted[0].job, False, fault)], batch)
            return
        self._finish(results, batch)
        for intent in accepted:
            self._top_up(batch, [intent], time.monotonic())

    def _abandon(self, batch: AgentBatch, results: list[StepResult]) -> None:
        """Cancel the whole open batch (every undecided member reverts), answer ``results``
        and the ROLLBACKs waiting for the batch."""
        self._cancel_quietly(batch.persist_id)
        self._release()
        self._close_reverted(batch, results)
        self._finish(results, batch)

    def _prepare_batch(self, intents: list[Intent], started: float) -> None:
        timeout_s = self._confirm_timeout_s(intents)
        try:
            self.session.lock_candidate()
        except RouterFailure as exc:
            self._finish([StepResult(i.job, False, exc.fault) for i in intents])
            return
        try:
            accepted, refused = self._edit_all(intents)
        except RouterFailure as exc:
            self._release()
            self._finish([StepResult(i.job, False, exc.fault) for i in intents])
            return
        results = list(refused)
        if not accepted:
            self._release()
            self._finish(results)
            return
        persist_id = f"idc-{uuid.uuid4().hex}"
        expire_at = utcnow() + timedelta(seconds=timeout_s)
        batch = AgentBatch(
            persist_id=persist_id,
            router_name=self.device.name,
            state=OPEN,
            expire_at=expire_at,
            members={i.job.command.circuit_id: self._member(i) for i in accepted},
        )
        # Recorded before the commit: if the agent dies right after it, the restart finds
        # the batch and cancels it instead of leaving the router locked until the timeout.
        with self.session_factory() as db, db.begin():
            self.lease.fence(db)
            self._save_batch(batch, db)
        try:
            self.session.confirmed_commit(persist_id, timeout_s)
        except RouterFailure as exc:
            self._release()
            batch.state = CLOSED
            batch.members = {c: {**m, "state": REVERTED} for c, m in batch.members.items()}
            if len(accepted) > 1 and exc.fault.kind is FaultKind.RPC_ERROR:
                # The commit refused the batch as a whole: retry the circuits one by one
                # so that only the faulty one fails.
                self._finish(results, batch)
                for intent in accepted:
                    self._prepare_batch([intent], time.monotonic())
                return
            self._finish(results + [StepResult(i.job, False, exc.fault) for i in accepted], batch)
            return
        for intent in accepted:
            crash_point(AGENT_AFTER_CONFIRMED_COMMIT, intent.job.command.circuit_id)
        fault = self._verify((i.key, i.after) for i in accepted)
        duration = int((time.monotonic() - started) * 1000)
        if fault is not None:
            # Leave nothing half-applied: cancel and report.
            self._cancel_quietly(persist_id)
            self._release()
            batch.state = CLOSED
            batch.members = {c: {**m, "state": REVERTED} for c, m in batch.members.items()}
            results += [StepResult(i.job, False, fault, duration_ms=duration) for i in accepted]
        else:
            results += _prepared(
                accepted, persist_id, expire_at, duration, f"batch of {len(accepted)}"
            )
        self._finish(results, batch)

    def _edit_all(
        self, intents: list[Intent], kept: Sequence[str] = ()
    ) -> tuple[list[Intent], list[StepResult]]:
        """Edit every payload into the (locked) candidate, after the ``kept`` edits (reset
        to running plus those first); a refused one is left out. A group goes out as one
        merged edit; a refused group is halved and each half tried again, down to single
        circuits, so that only the faulty circuit is refused, with the router's own message
        (one bad circuit among n costs about 2 log2(n) edits rather than n)."""
        self._reset_candidate(kept)
        accepted: list[Intent] = []
        refused: list[StepResult] = []
        groups = [list(intents)]
        while groups:
            group = groups.pop(0)
            if len(group) > 1:
                if self._edit_merged([i.payload for i in group]):
                    accepted += group
                    continue
                self._reset_candidate([*kept, *(a.payload for a in accepted)])
                half = len(group) // 2
                groups[:0] = [group[:half], group[half:]]
                continue
            [intent] = group
            try:
                self.session.edit_candidate(intent.payload)
            except RouterFailure as exc:
                if exc.fault.kind is not FaultKind.RPC_ERROR:
                    raise
                refused.append(StepResult(intent.job, False, exc.fault, sha256=intent.sha256))
                # A refused edit may have left part of itself: rebuild from the accepted.
                self._reset_candidate([*kept, *(a.payload for a in accepted)])
                continue
            accepted.append(intent)
        return accepted, refused

    def _edit_merged(self, edits: Sequence[str]) -> bool:
        """One edit-config for all ``edits`` (a router with thousands of circuits takes
        long over each edit, hardly longer for many circuits than for one). False, and
        the candidate possibly touched, when they cannot be merged or the router refuses
        the whole."""
        try:
            merged = merge_configs(edits)
        except MergeConflict:
            return False
        try:
            self.session.edit_candidate(merged)
        except RouterFailure as exc:
            if exc.fault.kind is not FaultKind.RPC_ERROR:
                raise
            return False
        return True

    def _reset_candidate(self, edits: Iterable[str]) -> None:
        """The candidate back to running plus ``edits`` (each accepted before)."""
        self.session.discard()
        edits = list(edits)
        if len(edits) > 1 and self._edit_merged(edits):
            return
        self.session.discard()
        for edit in edits:
            self.session.edit_candidate(edit)

    def _release(self) -> None:
        for step in (self.session.discard, self.session.unlock_candidate):
            try:
                step()
            except RouterFailure as exc:
                log.warning("%s: %s", self.device.name, exc)

    def _cancel_quietly(self, persist_id: str) -> None:
        try:
            self.session.cancel(persist_id)
        except RouterFailure as exc:
            # "not active": it expired or was never committed; running is back either way.
            log.info("%s: cancel-commit %s: %s", self.device.name, persist_id, exc)

    # -- CONFIRM ------------------------------------------------------------------------

    def _confirm(self, jobs: list[Job]) -> None:
        """CONFIRMs, grouped by the batch they confirm: per batch one confirming commit
        (when still open), one read-back and one transaction for the replies."""
        started = time.monotonic()
        missing: list[StepResult] = []
        groups: dict[str, tuple[AgentBatch, list[Job]]] = {}
        loaded: dict[str, AgentBatch | None] = {}
        for job in jobs:
            command = job.command
            # One load per batch named (a batch's members are stored as one document).
            batch = loaded.get(command.persist_id) if command.persist_id else None
            member = batch.members.get(command.circuit_id) if batch is not None else None
            if member is None or member["saga_id"] != command.saga_id:
                batch = self._find_member(command)
                if command.persist_id:
                    loaded[command.persist_id] = batch
            if batch is None:
                missing.append(
                    StepResult(
                        job,
                        False,
                        self._fault(
                            FaultKind.INTERNAL,
                            f"no prepared transaction for circuit {command.circuit_id} "
                            f"in saga {command.saga_id} on {self.device.name}",
                        ),
                    )
                )
                continue
            groups.setdefault(batch.persist_id, (batch, []))[1].append(job)
        if missing:
            self._finish(missing)
        for batch, group in groups.values():
            self._confirm_batch(batch, group, started)

    def _confirm_batch(self, batch: AgentBatch, jobs: list[Job], started: float) -> None:
        results: list[StepResult] = []
        if batch.state == OPEN:
            try:
                for other in batch.members.values():
                    if other["state"] == ROLLED_BACK_IN_CANDIDATE:
                        other["state"] = REVERTED
                self.session.confirm(batch.persist_id)
            except RouterFailure as exc:
                self._cancel_quietly(batch.persist_id)
                self._release()
                self._close_reverted(batch, results)
                results += [
                    StepResult(job, False, exc.fault, persist_id=batch.persist_id) for job in jobs
                ]
                self._finish(results, batch)
                return
            self._release()
            batch.state = CLOSED
            for _circuit, other in batch.members.items():
                if other["state"] == UNDECIDED:
                    other["state"] = COMMITTED
            results += self._deferred_rollback_results(batch)
        applied = [
            m
            for m in (batch.members[job.command.circuit_id] for job in jobs)
            if m["state"] in (COMMITTED, CONFIRMED)
        ]
        faults = self._check([((m["interface"], m["vlan"]), m["after"]) for m in applied])
        duration = int((time.monotonic() - started) * 1000)
        for job in jobs:
            member = batch.members[job.command.circuit_id]
            if member["state"] in (COMMITTED, CONFIRMED):
                fault = faults[(member["interface"], member["vlan"])]
                member["state"] = CONFIRMED
                results.append(
                    StepResult(
                        job,
                        fault is None,
                        fault,
                        persist_id=batch.persist_id,
                        sha256=member["sha256"],
                        duration_ms=duration,
                    )
                )
                continue
            results.append(
                StepResult(
                    job,
                    False,
                    self._fault(
                        FaultKind.TIMEOUT,
                        f"confirmed commit {batch.persist_id} was cancelled or expired before the "
                        "confirm; the router reverted",
                        retryable=True,
                    ),
                    persist_id=batch.persist_id,
                )
            )
        self._finish(results, batch)

    def _close_reverted(self, batch: AgentBatch, results: list[StepResult]) -> None:
        batch.state = CLOSED
        for other in batch.members.values():
            if other["state"] in (UNDECIDED, ROLLED_BACK_IN_CANDIDATE):
                other["state"] = REVERTED
        results += self._deferred_rollback_results(batch)

    def _deferred_rollback_results(self, batch: AgentBatch) -> list[StepResult]:
        """Answer ROLLBACKs that waited for the batch to resolve, after verifying."""
        waiting = [(c, m) for c, m in batch.members.items() if m.get("rollback_job")]
        if not waiting:
            return []
        fault = self._verify(((m["interface"], m["vlan"]), m["before"]) for _, m in waiting)
        results = []
        for _, member in waiting:
            job = Job(
                member["rollback_job"],
                self._load_command(member["rollback_job"]),
                member.get("rollback_trace", ""),
            )
            results.append(StepResult(job, fault is None, fault, persist_id=batch.persist_id))
            member.pop("rollback_job")
        return results

    def _load_command(self, row_id: int) -> provisioning_pb2.ProvisioningCommand:
        with self.session_factory() as db:
            row = db.get(AgentCommand, row_id)
            assert row is not None
            command = provisioning_pb2.ProvisioningCommand()
            command.ParseFromString(row.command)
            return command

    # -- ROLLBACK -----------------------------------------------------------------------

    def _rollback(self, job: Job) -> None:
        started = time.monotonic()
        command = job.command
        batch = self._find_member(command)
        if batch is None:
            # Never prepared here (or its prepare failed): nothing to undo.
            self._finish([StepResult(job, True, message="nothing prepared")])
            return
        member = batch.members[command.circuit_id]
        key = (member["interface"], member["vlan"])
        if batch.state == OPEN and member["state"] == UNDECIDED:
            undecided = [m for m in batch.members.values() if m["state"] == UNDECIDED]
            if len(undecided) == 1:
                self._cancel_quietly(batch.persist_id)
                self._release()
                member["rollback_job"], member["rollback_trace"] = job.row_id, job.traceparent
                results: list[StepResult] = []
                self._close_reverted(batch, results)
                self._finish(results, batch)
                return
            try:
                self.session.edit_candidate(member["inverse"])
            except RouterFailure as exc:
                self._finish([StepResult(job, False, exc.fault)], batch)
                return
            member["state"] = ROLLED_BACK_IN_CANDIDATE
            member["rollback_job"], member["rollback_trace"] = job.row_id, job.traceparent
            # Answered when the batch resolves; the job is done as far as the queue goes.
            self._finish([], batch, done_jobs=[job])
            return
        if batch.state == OPEN and member["state"] == ROLLED_BACK_IN_CANDIDATE:
            # Sent again (the coordinator's deadline passed while the batch stayed open):
            # running still shows the member until the batch resolves, so this one is
            # answered then too, in place of the earlier one.
            member["rollback_job"], member["rollback_trace"] = job.row_id, job.traceparent
            self._finish([], batch, done_jobs=[job])
            return
        if member["state"] in (COMMITTED, CONFIRMED):
            try:
                self._transaction(member["inverse"])
                member["state"] = REVERTED
            except RouterFailure as exc:
                self._finish([StepResult(job, False, exc.fault)], batch)
                return
        fault = self._verify([(key, member["before"])])
        self._finish(
            [
                StepResult(
                    job,
                    fault is None,
                    fault,
                    persist_id=batch.persist_id,
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            ],
            batch,
        )

    def _transaction(self, config: str) -> None:
        """lock, edit-config, commit, unlock (candidate discarded on failure)."""
        self.session.lock_candidate()
        try:
            self.session.discard()
            self.session.edit_candidate(config)
            self.session.commit()
        finally:
            self._release()

    # -- expiry and takeover ------------------------------------------------------------

    def _cancel_expiring_batch(self) -> bool:
        batch = self._open_batch()
        if batch is None:
            return False
        expire_at = (
            batch.expire_at if batch.expire_at.tzinfo else batch.expire_at.replace(tzinfo=UTC)
        )
        if expire_at - timedelta(seconds=EXPIRY_MARGIN_S) > utcnow():
            return False
        with self._step_span("cancel expiring batch", []):
            self._cancel_quietly(batch.persist_id)
            self._release()
            results: list[StepResult] = []
            self._close_reverted(batch, results)
            self._finish(results, batch)
        log.info(
            "%s: batch %s cancelled unresolved at its timeout", self.device.name, batch.persist_id
        )
        return True

    def _settle_left_open(self) -> None:
        """On acquiring the lease (at start, or taking over from a peer whose lease ran
        out), before anything else on the router: settle each batch left open, by its
        persist id (any session may; the previous holder's lock ended with its session)."""
        for batch in self._open_batches():
            confirming = [
                j
                for j in self._pending_jobs()
                if j.command.action == CONFIRM
                and batch.members.get(j.command.circuit_id, {}).get("saga_id") == j.command.saga_id
            ]
            settle = settle_left_open(
                confirm_queued=bool(confirming),
                rolled_back_in_candidate=any(
                    m["state"] == ROLLED_BACK_IN_CANDIDATE for m in batch.members.values()
                ),
            )
            with self._step_span(f"{settle.value} batch left open", confirming[:1]):
                try:
                    if settle is LeftOpen.CONFIRM:
                        self.session.confirm(batch.persist_id)
                    else:
                        self.session.cancel(batch.persist_id)
                except RouterFailure as exc:
                    if exc.fault.kind is not FaultKind.RPC_ERROR or exc.fault.retryable:
                        raise  # unreachable or locked: settled on the next try
                    # Not pending any more: the previous holder ended it and died before
                    # recording so. Running tells which way.
                    outcome = "found ended"
                    self._record_from_running(batch)
                else:
                    outcome = "confirmed" if settle is LeftOpen.CONFIRM else "cancelled"
                    for member in batch.members.values():
                        if member["state"] == UNDECIDED and settle is LeftOpen.CONFIRM:
                            member["state"] = COMMITTED
                results: list[StepResult] = []
                self._close_reverted(batch, results)
                self._finish(results, batch)
            log.info(
                "%s: batch %s left open by a previous holder %s",
                self.device.name,
                batch.persist_id,
                outcome,
            )

    def _record_from_running(self, batch: AgentBatch) -> None:
        """Each undecided member is committed if running holds what it meant to leave."""
        running = self._running_subinterfaces(
            (m["interface"], m["vlan"]) for m in batch.members.values()
        )
        for member in batch.members.values():
            if member["state"] not in (UNDECIDED, ROLLED_BACK_IN_CANDIDATE):
                continue
            have = running.get((member["interface"], member["vlan"]))
            want = member["after"]
            applied = have is None if want is None else not differences(want, have)
            if applied:
                member["state"] = COMMITTED
