"""The saga's decisions on a router: CONFIRM and ROLLBACK of prepared circuits, and the
batch nobody resolved before its timeout.

CONFIRM of any member commits the batch (the confirming commit by persist id), after the
inverses of members already rolled back are in the candidate; a confirming commit without
an answer leaves the batch to be settled by confirming, and its CONFIRMs queued. ROLLBACK
of the last undecided member cancels the batch; earlier ones edit the member's inverse into
the candidate and are answered when the batch ends; a member already in running for good
gets its inverse in a transaction of its own.
"""

from __future__ import annotations

import logging
import time

from services.provisioning.agent.context import RouterContext
from services.provisioning.agent.jobs import Job
from services.provisioning.agent.ledger import StepResult
from services.provisioning.agent.settle import (
    cancel_batch,
    ended_on_router,
    waiting_rollback_results,
)
from services.provisioning.domain.batch import (
    IN_RUNNING_FOR_GOOD,
    Batch,
    Member,
    MemberState,
    RollbackPlan,
    Settle,
    WaitingReply,
)
from services.provisioning.domain.faults import FaultKind, RouterFailure, RouterFault
from services.provisioning.router import commit_found_nothing, outcome_unknown
from services.provisioning.tables import utcnow

log = logging.getLogger(__name__)

# Cancel an unresolved batch this long before the router's own timeout would revert it.
EXPIRY_MARGIN_S = 1.0


def _unread(fault: RouterFault | None) -> bool:
    """Whether a read-back failed to read (rather than found running different)."""
    return fault is not None and fault.kind is not FaultKind.VERIFICATION_FAILED


class Decider:
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx

    # -- CONFIRM ------------------------------------------------------------------------

    def confirm(self, jobs: list[Job]) -> None:
        """CONFIRMs, grouped by the batch they confirm: per batch one confirming commit
        (when still open), one read-back and one transaction for the replies."""
        started = time.monotonic()
        missing: list[StepResult] = []
        groups: dict[str, tuple[Batch, list[Job]]] = {}
        loaded: dict[str, Batch | None] = {}
        for job in jobs:
            command = job.command
            # One load per batch named (a batch's members are stored as one document).
            batch = loaded.get(command.persist_id) if command.persist_id else None
            if batch is None or not batch.holds(command.circuit_id, command.saga_id):
                batch = self.ctx.ledger.find_member(command)
                if command.persist_id:
                    loaded[command.persist_id] = batch
            if batch is None:
                missing.append(
                    StepResult(
                        job,
                        False,
                        self.ctx.fault(
                            FaultKind.INTERNAL,
                            f"no prepared transaction for circuit {command.circuit_id} "
                            f"in saga {command.saga_id} on {self.ctx.device.name}",
                        ),
                    )
                )
                continue
            groups.setdefault(batch.persist_id, (batch, []))[1].append(job)
        if missing:
            self.ctx.ledger.finish(missing)
        for batch, group in groups.values():
            self._confirm_batch(batch, group, started)

    def _confirm_batch(self, batch: Batch, jobs: list[Job], started: float) -> None:
        ctx = self.ctx
        results: list[StepResult] = []
        if batch.is_open:
            try:
                ctx.session.confirm(batch.persist_id)
            except RouterFailure as exc:
                if outcome_unknown(exc.fault):
                    log.warning(
                        "%s: confirming commit %s: %s; outcome unknown, to be settled",
                        ctx.device.name,
                        batch.persist_id,
                        exc,
                    )
                    batch.outcome_unknown(Settle.CONFIRM)
                    ctx.ledger.finish([], batch)
                    return
                if not commit_found_nothing(exc.fault):
                    # Refused: nothing confirmed; end the batch, the saga decides again.
                    cancel_batch(
                        ctx,
                        batch,
                        [
                            StepResult(j, False, exc.fault, persist_id=batch.persist_id)
                            for j in jobs
                        ],
                    )
                    return
                # Not pending any more (the router's timeout): running tells what is left.
                if not ended_on_router(ctx, batch, Settle.CONFIRM):
                    ctx.ledger.finish([], batch)
                    return
            else:
                batch.confirmed()
            ctx.release()
            results += waiting_rollback_results(ctx, batch)
        members = [batch.members[job.circuit_id] for job in jobs]
        faults = ctx.check([(m.key, m.after) for m in members if m.state in IN_RUNNING_FOR_GOOD])
        duration = int((time.monotonic() - started) * 1000)
        unread = [job for job, m in zip(jobs, members, strict=True) if _unread(faults.get(m.key))]
        if unread:
            # Confirmed, but running could not be read to verify it: answered once it can
            # be (a failure now would make the saga prepare again what the router holds).
            log.warning(
                "%s: batch %s confirmed; read-back failed, the confirms wait for it",
                ctx.device.name,
                batch.persist_id,
            )
            ctx.ledger.finish(results, batch)
            return
        for job, member in zip(jobs, members, strict=True):
            if member.state in IN_RUNNING_FOR_GOOD:
                fault = faults[member.key]
                member.state = MemberState.CONFIRMED
                results.append(
                    StepResult(
                        job,
                        fault is None,
                        fault,
                        persist_id=batch.persist_id,
                        sha256=member.sha256,
                        duration_ms=duration,
                    )
                )
                continue
            results.append(
                StepResult(
                    job,
                    False,
                    ctx.fault(
                        FaultKind.TIMEOUT,
                        f"confirmed commit {batch.persist_id} was cancelled or expired before the "
                        "confirm; the router reverted (read back from running)",
                        retryable=True,
                    ),
                    persist_id=batch.persist_id,
                )
            )
        ctx.ledger.finish(results, batch)

    # -- ROLLBACK -----------------------------------------------------------------------

    def rollback(self, job: Job) -> None:
        ctx = self.ctx
        started = time.monotonic()
        batch = ctx.ledger.find_member(job.command)
        if batch is None:
            # Never prepared here (or its prepare failed): nothing to undo.
            ctx.ledger.finish([StepResult(job, True, message="nothing prepared")])
            return
        plan = batch.rollback_plan(job.circuit_id)
        member = batch.members[job.circuit_id]
        waiting = WaitingReply(job.row_id, job.traceparent)
        if plan is RollbackPlan.CANCEL_BATCH:
            batch.wait_for_end(job.circuit_id, waiting)
            ctx.ledger.finish([], batch, done_jobs=[job])
            cancel_batch(ctx, batch, [])
            return
        if plan is RollbackPlan.EDIT_INVERSE:
            try:
                ctx.session.edit_candidate(member.inverse)
            except RouterFailure as exc:
                ctx.ledger.finish([StepResult(job, False, exc.fault)], batch)
                return
            batch.roll_back_in_candidate(job.circuit_id, waiting)
            # Answered when the batch ends; the job is done as far as the queue goes.
            ctx.ledger.finish([], batch, done_jobs=[job])
            return
        if plan is RollbackPlan.ALREADY_WAITING:
            # Sent again (the coordinator's deadline passed while the batch stayed open):
            # running shows the member until the batch ends, so this one is answered then,
            # in place of the earlier one.
            batch.wait_for_end(job.circuit_id, waiting)
            ctx.ledger.finish([], batch, done_jobs=[job])
            return
        if (
            plan is RollbackPlan.APPLY_INVERSE
            and ctx.verify([(member.key, member.before)])
            and self._apply_inverse(job, batch, member, waiting)
        ):
            return
        fault = ctx.verify([(member.key, member.before)])
        if fault is None:
            member.state = MemberState.REVERTED
        ctx.ledger.finish(
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

    def _apply_inverse(
        self, job: Job, batch: Batch, member: Member, waiting: WaitingReply
    ) -> bool:
        """Undo a member in running for good; True when the ROLLBACK is answered (or waits
        for another batch), False when running is to be read for its answer."""
        carrier = self.ctx.ledger.open_batch()
        if carrier is not None:
            self._undo_in_open_batch(job, carrier, member, waiting)
            return True
        try:
            self._transaction(member.inverse)
        except RouterFailure as exc:
            if not outcome_unknown(exc.fault):
                self.ctx.ledger.finish([StepResult(job, False, exc.fault)], batch)
                return True
            # No answer: whether the inverse landed is read from running.
        return False

    def _undo_in_open_batch(
        self, job: Job, carrier: Batch, member: Member, waiting: WaitingReply
    ) -> None:
        """The inverse of a circuit in running for good, while the worker's open batch holds
        the candidate lock (and the router's one pending commit): a transaction of its own
        would be refused the lock. The inverse goes into that batch's candidate instead and
        the ROLLBACK is answered when the batch ends."""
        ctx = self.ctx
        if job.circuit_id in carrier.members:
            # Another saga of this circuit is in that batch: this one is sent again later.
            fault = ctx.fault(
                FaultKind.TIMEOUT,
                f"circuit {job.circuit_id} is in the pending commit {carrier.persist_id}; "
                "router untouched",
                retryable=True,
            )
            ctx.ledger.finish([StepResult(job, False, fault)])
            return
        try:
            ctx.session.edit_candidate(member.inverse)
        except RouterFailure as exc:
            if outcome_unknown(exc.fault):
                # The session, its lock and the candidate are gone: end the carrier too.
                cancel_batch(ctx, carrier, [StepResult(job, False, exc.fault)])
                return
            ctx.ledger.finish([StepResult(job, False, exc.fault)])
            return
        carrier.undo_in_candidate(job.circuit_id, member, waiting)
        ctx.ledger.finish([], carrier, done_jobs=[job])
        log.info(
            "%s: inverse of %s edited into batch %s (its lock held); answered when it ends",
            ctx.device.name,
            job.circuit_id,
            carrier.persist_id,
        )

    def _transaction(self, config: str) -> None:
        """lock, edit-config, commit, unlock (candidate discarded on failure)."""
        session = self.ctx.session
        session.lock_candidate()
        try:
            session.discard()
            session.edit_candidate(config)
            session.commit()
        finally:
            self.ctx.release()

    # -- expiry -------------------------------------------------------------------------

    def cancel_expiring(self, batch: Batch | None) -> bool:
        """Cancel the open batch just before the router's own timeout would (the router
        reverts it then too: measured), so that its end is the agent's act."""
        if batch is None or not batch.expiring(utcnow(), EXPIRY_MARGIN_S):
            return False
        cancel_batch(self.ctx, batch, [])
        log.info(
            "%s: batch %s cancelled unresolved at its timeout",
            self.ctx.device.name,
            batch.persist_id,
        )
        return True
