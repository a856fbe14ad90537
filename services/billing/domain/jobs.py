"""Billing jobs: a run or a close carried out by the billing service, not by its caller.

A job is QUEUED when asked for, RUNNING once a billing process claims it, then SUCCEEDED
or FAILED. A process that dies mid-job cannot say so itself: its job is INTERRUPTED by
the next process that sees it unfinished with no heartbeat for a while (or at once by the
same host's next start). Rerunning is safe: a run recomputes the same draft invoices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED)


class JobKind(StrEnum):
    # RunBillingCycle: one entity (or all customers) and one month.
    RUN = "RUN"
    # StartBillingClose: every entity's month, then the close warnings.
    CLOSE = "CLOSE"


@dataclass(frozen=True)
class JobLiveness:
    state: JobState
    owner: str
    heartbeat_at: datetime


def abandoned(
    job: JobLiveness, me: str, now: datetime, stale_after: timedelta, *, starting: bool
) -> bool:
    """Whether an unfinished job's process is gone: it stopped beating for ``stale_after``,
    or, when this process is ``starting``, it belonged to this very host (restarted)."""
    if job.state.finished:
        return False
    if starting and job.owner == me:
        return True
    return now - job.heartbeat_at > stale_after


INTERRUPTED_MESSAGE = (
    "the billing process running this job stopped before it finished; invoices written so "
    "far are whole and a rerun of the same month recomputes the same ones: start it again"
)
