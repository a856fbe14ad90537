"""Ending a batch whose outcome the worker does not know, by reading the router.

Every way a pending commit ends goes through here: the agent's own cancel (the last
member rolled back, a refused top-up, an expiring batch), and the settling of a batch whose
commit, confirm or cancel got no answer or lost its session. The rule: an answered cancel
means reverted; "not active" means the router ended it some other way (its timeout, an
earlier attempt whose reply was lost), and running says which way; no answer means the
batch waits, marked to be settled, and nothing else happens on the router until it is.
"""

from __future__ import annotations

import logging

from services.provisioning.agent.context import RouterContext
from services.provisioning.agent.ledger import StepResult
from services.provisioning.domain.batch import Batch, Settle
from services.provisioning.domain.faults import RouterFailure
from services.provisioning.router import cancel_found_nothing, commit_found_nothing

log = logging.getLogger(__name__)


def waiting_rollback_results(ctx: RouterContext, batch: Batch) -> list[StepResult]:
    """Answer the ROLLBACKs that waited for the batch to end, after verifying running."""
    waiting = batch.waiting_rollbacks()
    if not waiting:
        return []
    # Each on its own: an inverse the batch carried for a circuit of an earlier batch is
    # gone if the batch was cancelled, and only that ROLLBACK fails.
    faults = ctx.check([(member.key, member.before) for member, _ in waiting])
    results = []
    for member, reply in waiting:
        fault = faults[member.key]
        results.append(
            StepResult(ctx.ledger.job(reply), fault is None, fault, persist_id=batch.persist_id)
        )
        batch.answered(member)
    return results


def cancel_batch(ctx: RouterContext, batch: Batch, results: list[StepResult]) -> None:
    """Cancel the batch's pending commit and record what running holds; store the batch
    and answer ``results`` with the ROLLBACKs that waited for it. Without an answer the
    batch is left to be settled, and only ``results`` are answered now."""
    try:
        ctx.session.cancel(batch.persist_id)
    except RouterFailure as exc:
        if not cancel_found_nothing(exc.fault):
            log.warning(
                "%s: cancel-commit %s: %s; to be settled from the router",
                ctx.device.name,
                batch.persist_id,
                exc,
            )
            batch.outcome_unknown(Settle.CANCEL)
            ctx.ledger.finish(results, batch)
            return
        if not ended_on_router(ctx, batch, Settle.CANCEL):
            ctx.ledger.finish(results, batch)
            return
    else:
        batch.reverted()
    ctx.release()
    ctx.ledger.finish([*results, *waiting_rollback_results(ctx, batch)], batch)


def settle(ctx: RouterContext, batch: Batch, how: Settle) -> bool:
    """End ``batch`` ``how`` by its persist id (from whatever session is open now) and
    record each member as running holds it; False, the batch still to be settled, when the
    router does not answer."""
    confirming = how is Settle.CONFIRM
    operation = ctx.session.confirm if confirming else ctx.session.cancel
    found_nothing = commit_found_nothing if confirming else cancel_found_nothing
    if confirming:
        _drop_foreign_edits(ctx, batch)
    try:
        operation(batch.persist_id)
        answered = True
    except RouterFailure as exc:
        if not found_nothing(exc.fault):
            log.warning(
                "%s: settling batch %s (%s): %s", ctx.device.name, batch.persist_id, how.value, exc
            )
            return False
        answered = False
    if not ended_on_router(ctx, batch, how, nothing_pending=answered):
        return False
    ctx.release()
    ctx.ledger.finish(waiting_rollback_results(ctx, batch), batch)
    log.info(
        "%s: batch %s settled (%s): %s",
        ctx.device.name,
        batch.persist_id,
        how.value,
        ", ".join(f"{c} {m.state.value}" for c, m in batch.members.items()),
    )
    return True


def _drop_foreign_edits(ctx: RouterContext, batch: Batch) -> None:
    """A confirm commits the whole candidate: an agent killed between its edit and its commit
    leaves that edit there, and confirming would put it on the router unasked (a later create
    of that circuit then meets "data exists"). Resetting the candidate to running first keeps
    the pending commit (running holds it) and drops only the stray edit. A router that refuses
    (another session holds the lock) is confirmed as before."""
    try:
        ctx.session.discard()
    except RouterFailure as exc:
        log.info("%s: candidate not reset before settling %s: %s",
                 ctx.device.name, batch.persist_id, exc)


def ended_on_router(
    ctx: RouterContext, batch: Batch, how: Settle, *, nothing_pending: bool = False
) -> bool:
    """The router said nothing is pending under the batch's persist id (or, with
    ``nothing_pending``, the settle's own commit was answered): check that no commit is
    pending at all, then record each member as running holds it. False, the batch marked to
    be settled ``how``, when that cannot be established now."""
    if not nothing_pending and not _no_commit_pending(ctx):
        log.warning(
            "%s: batch %s: the router says it is not pending, yet a commit is (or the "
            "candidate is locked); to be settled",
            ctx.device.name,
            batch.persist_id,
        )
        batch.outcome_unknown(how)
        return False
    try:
        running = ctx.running_subinterfaces(batch.keys())
    except RouterFailure as exc:
        log.warning(
            "%s: reading batch %s back: %s; to be settled", ctx.device.name, batch.persist_id, exc
        )
        batch.outcome_unknown(how)
        return False
    batch.recorded_from(running)
    return True


def _no_commit_pending(ctx: RouterContext) -> bool:
    """The one way this router tells whether any confirmed commit is pending: while one
    is, it refuses a lock of the candidate to every session (measured on netconfd). Our own
    lock is released first; the probe's lock is released after."""
    ctx.release()
    try:
        ctx.session.lock_candidate()
    except RouterFailure:
        return False
    ctx.release()
    return True
