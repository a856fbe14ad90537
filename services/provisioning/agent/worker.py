"""One router's worker: holds the router's lease, settles what is unresolved, then drains
the router's queue, one step at a time."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Link
from sqlalchemy.orm import Session, sessionmaker

from services.common.grpc_server import AlarmCheck, Worker
from services.provisioning.agent.context import RouterContext
from services.provisioning.agent.decide import Decider
from services.provisioning.agent.jobs import CONFIRM, PREPARE, ROLLBACK, Job
from services.provisioning.agent.ledger import Ledger
from services.provisioning.agent.prepare import Preparer, batchable
from services.provisioning.agent.settle import settle
from services.provisioning.domain.batch import Batch, MemberState, settle_left_open
from services.provisioning.domain.lease import LeaseTerms, Move, Tenure
from services.provisioning.inventory import Device
from services.provisioning.lease_store import LeaseLost, SqlRouterLease, new_holder
from services.provisioning.rendering import Renderer
from services.provisioning.router import RouterSession
from services.provisioning.tables import utcnow

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# A router that does not answer a settle is asked again this long after.
SETTLE_RETRY_S = 1.0


@dataclass
class RouterWorker(Worker):
    """Drains one router's command queue while it holds the router's lease; the only user
    of that router's session."""

    device: Device
    session: RouterSession
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
    ledger: Ledger = field(init=False)
    _claiming: threading.Lock = field(init=False, default_factory=threading.Lock)
    _settle_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.name = f"agent:{self.device.name}"
        self.lease = SqlRouterLease(
            self.session_factory, self.device.name, self.holder, self.lease_terms
        )
        self.tenure = Tenure(self.lease_terms)
        self.ledger = Ledger(self.device, self.session_factory, self.lease, self.replies_topic)
        ctx = RouterContext(self.device, self.session, self.renderer, self.ledger)
        self._ctx = ctx
        self._preparer = Preparer(ctx)
        self._decider = Decider(ctx)

    # -- loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # Renewals on a thread of their own: a slow NETCONF step must not cost the lease.
        heartbeat = threading.Thread(
            target=self._keep_lease, args=(stop,), name=f"lease:{self.device.name}", daemon=True
        )
        heartbeat.start()
        try:
            while not stop.is_set():
                # Cleared before the round reads the queue: a command queued during the
                # round wakes the next one at once instead of waiting a poll interval.
                self.wake_event.clear()
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
        finally:
            heartbeat.join()
            self._let_go()

    def close(self) -> None:
        self.session.close()

    def run_once(self) -> bool:
        """Act on the router if this worker holds its lease: settle what is unresolved
        (left open by a previous holder, or a step without an answer), then handle what is
        queued (and an expiring batch). True if anything was done."""
        move = self._lease_move()
        if move is Move.WAIT:
            return False
        if move is Move.STAND_DOWN:
            log.warning("%s: lease lost; releasing the router to its holder", self.device.name)
            self._stand_down()
            return True
        # One read of the unresolved batches per round (this runs every poll interval).
        unresolved = self.ledger.unresolved_batches()
        taking_over = move is Move.TAKE_OVER
        # An open batch holds the candidate lock: one whose lock went with a lost session
        # (killed, router restarted) is settled as if a previous holder had left it open,
        # never edited further without the lock.
        lock_lost = any(b.is_open for b in unresolved) and not self.session.holds_lock
        if not self._settle(unresolved, taking_over=taking_over or lock_lost):
            return False
        if taking_over:
            log.info("%s: driven by %s from now on", self.device.name, self.holder)
            self.tenure.took_over()
        if taking_over or lock_lost:
            self._work(None)  # every batch left open was just settled
            return True
        # Settling touched only batches to be settled: the open one is still as read.
        return self._work(next((b for b in unresolved if b.is_open), None))

    def alarms(self) -> dict[str, AlarmCheck]:
        return {f"router-commit:{self.device.name}": self._commit_alarms}

    def _commit_alarms(self) -> list[str]:
        """A batch waiting to be settled, or a commit pending past its router timeout."""
        now = utcnow()
        texts = []
        for batch, since in self.ledger.unresolved_since():
            if batch.settle is not None:
                texts.append(
                    f"{self.device.name}: outcome of batch {batch.persist_id} "
                    f"({len(batch.members)} circuits) unknown since {since.isoformat()}; "
                    f"settling it by {batch.settle.value} once the router answers"
                )
            elif batch.expire_at < now:
                texts.append(
                    f"{self.device.name}: batch {batch.persist_id} still open "
                    f"{(now - batch.expire_at).total_seconds():.0f} s past its timeout"
                )
        return texts

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

    # -- settling -----------------------------------------------------------------------

    def _settle(self, unresolved: Sequence[Batch], *, taking_over: bool) -> bool:
        """Settle every batch whose outcome is not known (and, taking over, every batch
        left open: its previous holder's session is gone). False while the router does not
        answer: nothing else may happen on it meanwhile."""
        batches = [b for b in unresolved if taking_over or b.settle is not None]
        if not batches:
            return True
        if time.monotonic() < self._settle_at:
            return False
        pending = self.ledger.pending_jobs() if taking_over else []
        for batch in batches:
            how = batch.settle or settle_left_open(
                confirm_queued=any(
                    j.action == CONFIRM and batch.holds(j.circuit_id, j.command.saga_id)
                    for j in pending
                ),
                rolled_back_in_candidate=any(
                    m.state is MemberState.ROLLED_BACK_IN_CANDIDATE for m in batch.members.values()
                ),
            )
            with self._step_span(f"settle batch ({how.value})", []):
                settled = settle(self._ctx, batch, how)
            if not settled:
                self._settle_at = time.monotonic() + SETTLE_RETRY_S
                return False
        return True

    # -- work ---------------------------------------------------------------------------

    def _work(self, open_batch: Batch | None) -> bool:
        jobs = self.ledger.pending_jobs()
        expired = self._decider.cancel_expiring(open_batch)
        if not jobs or (expired and self._unsettled()):
            return expired
        # A decision waits for an earlier PREPARE of its circuit still queued (a ROLLBACK
        # sent at the coordinator's deadline must undo that prepare, not run before it).
        queued_prepares = [j for j in jobs if j.action == PREPARE]
        decisions = [
            j
            for j in jobs
            if j.action in (CONFIRM, ROLLBACK)
            and not any(
                p.row_id < j.row_id and p.circuit_id == j.circuit_id for p in queued_prepares
            )
        ]
        # Consecutive CONFIRMs are one step (one confirming commit, one read-back); the
        # order between confirms and rollbacks is kept. A step whose outcome is unknown
        # ends the round: the batch is settled before anything else.
        confirms: list[Job] = []
        for job in decisions:
            if job.action == CONFIRM:
                confirms.append(job)
                continue
            if not self._confirm_all(confirms):
                return True
            confirms = []
            with self._step_span("rollback", [job]):
                self._decider.rollback(job)
            if self._unsettled():
                return True
        if not self._confirm_all(confirms):
            return True
        # PREPAREs never wait for decisions: they open a batch, or join the open one (a
        # router holds one pending confirmed commit; a PREPARE waiting for it while the
        # other router's batch waits for this one's members would deadlock both). A
        # circuit already in the open batch (an earlier round) waits for it to resolve.
        # The open batch as this round read it, unless a decision or expiry changed it.
        batch = self.ledger.open_batch() if decisions or expired else open_batch
        members = set(batch.members) if batch is not None else set()
        # The last ROLLBACK queued per saga and circuit: a PREPARE queued before it is moot.
        rollbacks = {
            (j.command.saga_id, j.circuit_id): j.row_id for j in jobs if j.action == ROLLBACK
        }
        prepares = batchable([j for j in queued_prepares if j.circuit_id not in members])
        if prepares:
            with self._step_span("prepare", prepares):
                self._preparer.prepare(prepares, batch, rollbacks)
        elif not decisions:
            return expired
        return True

    def _confirm_all(self, jobs: list[Job]) -> bool:
        """Confirm ``jobs`` (if any); False when a batch was left to be settled."""
        if not jobs:
            return True
        with self._step_span("confirm", jobs):
            self._decider.confirm(jobs)
        return not self._unsettled()

    def _unsettled(self) -> bool:
        return any(b.settle is not None for b in self.ledger.unresolved_batches())

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
            attributes["idc.circuit.id"] = lead.circuit_id
            attributes["idc.saga.id"] = lead.command.saga_id
        with tracer.start_as_current_span(
            f"agent {step} {self.device.name}",
            context=lead.trace_context() if lead is not None else None,
            links=links,
            attributes=attributes,
        ):
            yield

