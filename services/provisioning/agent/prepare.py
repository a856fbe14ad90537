"""PREPARE: put circuits into a pending confirmed commit, a new batch or the open one.

A batch is recorded before its commit is sent: if the agent dies right after it, the
restart finds the batch and settles it instead of leaving the router locked until the
timeout. A commit that gets no answer leaves the batch to be settled (settle.py) and its
PREPAREs queued: they are answered from what the router holds once it is settled.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from services.provisioning.agent.context import Intent, RouterContext
from services.provisioning.agent.jobs import Job
from services.provisioning.agent.ledger import MAX_BATCH, StepResult
from services.provisioning.agent.settle import cancel_batch
from services.provisioning.crashpoints import AGENT_AFTER_CONFIRMED_COMMIT, crash_point
from services.provisioning.domain.batch import Batch, Settle
from services.provisioning.domain.faults import FaultKind, PayloadMismatch, RouterFailure
from services.provisioning.domain.merge import MergeConflict, merge_configs
from services.provisioning.router import commit_found_nothing, outcome_unknown
from services.provisioning.tables import utcnow

log = logging.getLogger(__name__)

DEFAULT_CONFIRM_TIMEOUT_S = 120


def batchable(prepares: list[Job]) -> list[Job]:
    """Queued PREPAREs for a batch: one per circuit (a later one waits its turn)."""
    chosen: dict[str, Job] = {}
    for job in prepares:
        chosen.setdefault(job.circuit_id, job)
        if len(chosen) == MAX_BATCH:
            break
    return list(chosen.values())


def _confirm_timeout_s(intents: list[Intent]) -> int:
    return (
        max(
            (i.job.command.confirm_timeout.seconds for i in intents),
            default=DEFAULT_CONFIRM_TIMEOUT_S,
        )
        or DEFAULT_CONFIRM_TIMEOUT_S
    )


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


class Preparer:
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx

    def prepare(
        self, jobs: list[Job], batch: Batch | None, rollbacks: dict[tuple[str, str], int]
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
            undone = rollbacks.get((job.command.saga_id, job.circuit_id), 0) > job.row_id
            if late or undone:
                why = "arrived after its deadline" if late else "was rolled back while queued"
                failed.append(
                    StepResult(
                        job,
                        False,
                        self.ctx.fault(
                            FaultKind.TIMEOUT, f"command {why}; router untouched", retryable=True
                        ),
                    )
                )
                continue
            try:
                intents.append(self.ctx.intent(job))
            except PayloadMismatch as exc:
                failed.append(StepResult(job, False, exc.fault, sha256=exc.rendered_sha256))
            except RouterFailure as exc:
                failed.append(StepResult(job, False, exc.fault))
        landed, intents = self._landed(intents)
        if failed or landed:
            self.ctx.ledger.finish([*failed, *landed])
        if intents and batch is None:
            self._new_batch(intents, started)
        elif intents and batch is not None:
            self._top_up(batch, intents, started)

    def _landed(self, intents: list[Intent]) -> tuple[list[StepResult], list[Intent]]:
        """PREPAREs already done: their saga's payload is in running for good from an ended
        batch (an agent killed after its commit landed and before it answered; the agent
        that took the router over settled the batch). Creating the circuit again would be
        refused ("data exists"): each is answered as prepared in that batch once running
        is read to hold it; the rest (and any running does not confirm) go ahead."""
        if not intents:
            return [], intents
        batches = self.ctx.ledger.landed([i.job for i in intents])
        same = [
            (intent, batches[intent.job.row_id])
            for intent in intents
            if intent.job.row_id in batches
            and batches[intent.job.row_id].members[intent.job.circuit_id].sha256 == intent.sha256
        ]
        if not same:
            return [], intents
        faults = self.ctx.check([(intent.key, intent.after) for intent, _ in same])
        done = [
            StepResult(
                intent.job,
                True,
                persist_id=batch.persist_id,
                sha256=intent.sha256,
                message=f"already in running from batch {batch.persist_id}",
            )
            for intent, batch in same
            if faults.get(intent.key) is None
        ]
        answered = {result.job.row_id for result in done}
        if done:
            log.info(
                "%s: %d PREPARE(s) found already in running, answered from their batch",
                self.ctx.device.name,
                len(done),
            )
        return done, [i for i in intents if i.job.row_id not in answered]

    # -- a new batch --------------------------------------------------------------------

    def _new_batch(self, intents: list[Intent], started: float) -> None:
        ctx = self.ctx
        session = ctx.session
        timeout_s = _confirm_timeout_s(intents)
        try:
            session.lock_candidate()
        except RouterFailure as exc:
            ctx.ledger.finish([StepResult(i.job, False, exc.fault) for i in intents])
            return
        try:
            accepted, refused = self._edit_all(intents)
        except RouterFailure as exc:
            ctx.release()
            ctx.ledger.finish([StepResult(i.job, False, exc.fault) for i in intents])
            return
        results = list(refused)
        if not accepted:
            ctx.release()
            ctx.ledger.finish(results)
            return
        batch = Batch(
            persist_id=f"idc-{uuid.uuid4().hex}",
            router_name=ctx.device.name,
            expire_at=utcnow() + timedelta(seconds=timeout_s),
            members={i.job.circuit_id: i.member() for i in accepted},
        )
        ctx.ledger.save(batch)
        try:
            session.confirmed_commit(batch.persist_id, timeout_s)
        except RouterFailure as exc:
            if outcome_unknown(exc.fault):
                self._unanswered(batch, results, exc)
                return
            ctx.release()
            batch.reverted()
            if len(accepted) > 1 and exc.fault.kind is FaultKind.RPC_ERROR:
                # The commit refused the batch as a whole: retry the circuits one by one
                # so that only the faulty one fails.
                ctx.ledger.finish(results, batch)
                for intent in accepted:
                    self._new_batch([intent], time.monotonic())
                return
            ctx.ledger.finish(
                results + [StepResult(i.job, False, exc.fault) for i in accepted], batch
            )
            return
        self._verify_prepared(batch, accepted, results, started, f"batch of {len(accepted)}")

    def _unanswered(self, batch: Batch, results: list[StepResult], exc: RouterFailure) -> None:
        """The commit got no answer: it may have landed. The batch is settled (cancelled,
        the saga has not decided) before anything else; its PREPAREs stay queued."""
        log.warning(
            "%s: confirmed commit %s: %s; outcome unknown, to be settled from the router",
            self.ctx.device.name,
            batch.persist_id,
            exc,
        )
        batch.outcome_unknown(Settle.CANCEL)
        self.ctx.ledger.finish(results, batch)

    def _verify_prepared(
        self,
        batch: Batch,
        accepted: list[Intent],
        results: list[StepResult],
        started: float,
        message: str,
    ) -> None:
        for intent in accepted:
            crash_point(AGENT_AFTER_CONFIRMED_COMMIT, intent.job.circuit_id)
        wrong = self.ctx.verify((i.key, i.after) for i in accepted)
        duration = int((time.monotonic() - started) * 1000)
        if wrong is not None:
            # Leave nothing half-applied: cancel the whole batch and report.
            cancel_batch(
                self.ctx,
                batch,
                results + [StepResult(i.job, False, wrong, duration_ms=duration) for i in accepted],
            )
            return
        results += _prepared(accepted, batch.persist_id, batch.expire_at, duration, message)
        self.ctx.ledger.finish(results, batch)

    # -- joining the open batch ---------------------------------------------------------

    def _top_up(self, batch: Batch, intents: list[Intent], started: float) -> None:
        """Add circuits to the open batch (its candidate lock is held): edit them in after
        the inverses of members rolled back so far, then a follow-up confirmed commit with
        the batch's persist id. Recorded before that commit, like a new batch."""
        ctx = self.ctx
        timeout_s = _confirm_timeout_s(intents)
        kept = batch.inverses_in_candidate()
        try:
            accepted, refused = self._edit_all(intents, kept)
        except RouterFailure as exc:
            # The session (and with it the lock and the candidate) is gone: end the batch.
            cancel_batch(ctx, batch, [StepResult(i.job, False, exc.fault) for i in intents])
            return
        results = list(refused)
        if not accepted:
            ctx.ledger.finish(results)
            return
        previous_expiry = batch.expire_at
        batch.join(
            {i.job.circuit_id: i.member() for i in accepted},
            utcnow() + timedelta(seconds=timeout_s),
        )
        ctx.ledger.save(batch)
        try:
            ctx.session.confirmed_commit_more(batch.persist_id, timeout_s)
        except RouterFailure as exc:
            if outcome_unknown(exc.fault):
                self._unanswered(batch, results, exc)
                return
            if commit_found_nothing(exc.fault):
                # The batch ended on the router (cancelled or expired): a passing failure.
                fault = ctx.fault(
                    FaultKind.TIMEOUT,
                    f"confirmed commit {batch.persist_id} ended before this circuit could join "
                    "it; router untouched",
                    retryable=True,
                )
                cancel_batch(
                    ctx, batch, [*results, *(StepResult(i.job, False, fault) for i in accepted)]
                )
                return
            if exc.fault.kind is not FaultKind.RPC_ERROR:
                cancel_batch(
                    ctx, batch, [*results, *(StepResult(i.job, False, exc.fault) for i in accepted)]
                )
                return
            batch.expire_at = previous_expiry
            self._top_up_refused(batch, accepted, kept, results, exc)
            return
        # The kept inverses went in with it: the next top-up must not edit them in again.
        batch.follow_up_committed()
        self._verify_prepared(
            batch, accepted, results, started, f"joined a batch of {len(batch.members)}"
        )

    def _top_up_refused(
        self,
        batch: Batch,
        accepted: list[Intent],
        kept: list[str],
        results: list[StepResult],
        refusal: RouterFailure,
    ) -> None:
        """The follow-up commit was refused, nothing applied: the candidate back to the
        batch's, the new members out of it; several are retried one by one so that only
        the faulty one fails."""
        batch.leave(i.job.circuit_id for i in accepted)
        try:
            self._reset_candidate(kept)
        except RouterFailure as exc:
            failed = [StepResult(i.job, False, exc.fault) for i in accepted]
            cancel_batch(self.ctx, batch, [*results, *failed])
            return
        if len(accepted) == 1:
            self.ctx.ledger.finish(
                [*results, StepResult(accepted[0].job, False, refusal.fault)], batch
            )
            return
        self.ctx.ledger.finish(results, batch)
        for intent in accepted:
            self._top_up(batch, [intent], time.monotonic())

    # -- editing the candidate ----------------------------------------------------------

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
                self.ctx.session.edit_candidate(intent.payload)
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
            self.ctx.session.edit_candidate(merged)
        except RouterFailure as exc:
            if exc.fault.kind is not FaultKind.RPC_ERROR:
                raise
            return False
        return True

    def _reset_candidate(self, edits: Iterable[str]) -> None:
        """The candidate back to running plus ``edits`` (each accepted before); whatever
        anyone else left in it is discarded (under our lock)."""
        session = self.ctx.session
        session.discard()
        edits = list(edits)
        if len(edits) > 1 and self._edit_merged(edits):
            return
        session.discard()
        for edit in edits:
            session.edit_candidate(edit)
