"""The billing process's job worker: runs queued billing jobs whoever waits for them.

A caller starts a job (a row in billing_jobs) and may follow it; the work happens in this
worker's thread, so a client that disconnects stops nothing. While a job runs, a timer
keeps its heartbeat fresh; a job whose process died is marked INTERRUPTED (domain/jobs.py)
by this host's next start at once, by any billing process once the heartbeat is older
than ``IDC_BILLING_JOB_STALE_S``. A process asked to stop mid-job marks it INTERRUPTED.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.billing.domain.jobs import (
    INTERRUPTED_MESSAGE,
    JobKind,
    JobLiveness,
    JobState,
    abandoned,
)
from services.billing.job_store import JobRecord, SqlJobStore
from services.common import errors
from services.common.config import ConfigError
from services.common.grpc_server import Worker

log = logging.getLogger(__name__)

DEFAULT_STALE_S = 120.0
# How often an idle worker looks for queued jobs another process's caller started.
IDLE_POLL_S = 0.5
# How often a follower reads the job's state.
FOLLOW_POLL_S = 0.2
# Progress of this many recent jobs is kept in memory for followers in this process.
FEEDS_KEPT = 20
# The stored progress (for GetBillingJob and followers elsewhere) is written at most this
# often, and at each change of stage: a run of thousands of customers reports thousands.
PROGRESS_WRITE_S = 0.5


@dataclass(frozen=True)
class JobSettings:
    stale_s: float = DEFAULT_STALE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JobSettings:
        raw = env.get("IDC_BILLING_JOB_STALE_S", "").strip()
        if not raw:
            return cls()
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if value < 5:
            raise ConfigError(
                f"IDC_BILLING_JOB_STALE_S={raw!r} is not valid: expected seconds, at least 5"
            )
        return cls(stale_s=value)


class Stopped(Exception):
    """The process is stopping: the job in hand is left INTERRUPTED."""


# A job's work: (request, report progress) -> result. ``report`` raises Stopped once the
# process is stopping, so work ends at its next report.
Report = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Report], dict[str, Any]]


def process_owner() -> str:
    """This host: a restarted container keeps it, so its own unfinished jobs are known."""
    return socket.gethostname()


class JobRunner(Worker):
    name = "billing-jobs"

    def __init__(
        self,
        store: SqlJobStore,
        clock: Callable[[], datetime],
        settings: JobSettings = JobSettings(),
        owner: str = "",
    ) -> None:
        self._store = store
        self._handlers: dict[JobKind, Handler] = {}
        self._clock = clock
        self._stale = timedelta(seconds=settings.stale_s)
        self._owner = owner or process_owner()
        self._wake = threading.Event()
        # Every progress report of recent jobs run here, so a follower sees each stage.
        self._feeds: dict[str, list[dict[str, Any]]] = {}
        self._fed = threading.Condition()

    def register(self, handlers: Mapping[JobKind, Handler]) -> None:
        self._handlers.update(handlers)

    def submit(self, kind: JobKind, request: dict[str, Any], created_by: str) -> JobRecord:
        job = self._store.create(
            "job-" + str(uuid.uuid4()), kind, request, created_by, self._clock()
        )
        self._wake.set()
        return job

    def recover(self, *, starting: bool) -> list[str]:
        """Marks abandoned RUNNING jobs INTERRUPTED; returns their ids."""
        now = self._clock()
        lost = [
            job.id
            for job in self._store.running()
            if abandoned(
                JobLiveness(job.state, job.owner, job.heartbeat_at),
                self._owner,
                now,
                self._stale,
                starting=starting,
            )
        ]
        for job_id in lost:
            self._store.finish(
                job_id,
                JobState.INTERRUPTED,
                now,
                error=INTERRUPTED_MESSAGE,
                error_code="FailedPrecondition",
            )
            log.error("billing job %s interrupted: %s", job_id, INTERRUPTED_MESSAGE)
        return lost

    def run(self, stop: threading.Event) -> None:
        starting, next_sweep = True, self._clock() + self._stale / 2
        while not stop.is_set():
            try:
                if starting:
                    self.recover(starting=True)
                    starting = False
                job = self._store.claim_next(self._owner, self._clock())
                if job is not None:
                    self._execute(job, stop)
                    continue
                if self._clock() >= next_sweep:
                    self.recover(starting=False)
                    next_sweep = self._clock() + self._stale / 2
            except Exception:
                # The database is away: queued jobs wait (their callers' deadlines bound them).
                log.exception("billing jobs: the job table could not be read")
            self._wake.wait(IDLE_POLL_S)
            self._wake.clear()

    def _execute(self, job: JobRecord, stop: threading.Event) -> None:
        beating = threading.Event()
        beat = threading.Thread(
            target=self._beat,
            args=(job.id, beating),
            daemon=True,
            name=f"billing-job-beat-{job.id}",
        )
        beat.start()

        with self._fed:
            self._feeds[job.id] = []
            for old in list(self._feeds)[:-FEEDS_KEPT]:
                del self._feeds[old]

        written: dict[str, Any] = {"stage": None, "at": 0.0}

        def report(progress: dict[str, Any]) -> None:
            if stop.is_set():
                raise Stopped
            with self._fed:
                self._feeds[job.id].append(progress)
                self._fed.notify_all()
            now = time.monotonic()
            if progress.get("stage") != written["stage"] or now - written["at"] >= (
                PROGRESS_WRITE_S
            ):
                self._store.beat(job.id, self._clock(), progress)
                written.update(stage=progress.get("stage"), at=now)

        try:
            result = self._handlers[job.kind](job.request, report)
        except Stopped:
            self._finish(
                job.id,
                JobState.INTERRUPTED,
                error=INTERRUPTED_MESSAGE,
                error_code="FailedPrecondition",
            )
        except errors.DomainError as error:
            log.warning("billing job %s failed: %s", job.id, error.message)
            self._finish(
                job.id, JobState.FAILED, error=error.message, error_code=type(error).__name__
            )
        except Exception as error:
            log.exception("billing job %s failed", job.id)
            self._finish(job.id, JobState.FAILED, error=f"internal error: {error}")
        else:
            self._finish(job.id, JobState.SUCCEEDED, result=result)
        finally:
            beating.set()
            beat.join()

    def runs_here(self, job_id: str) -> bool:
        """Whether this process's worker took the job (its reports are in memory)."""
        with self._fed:
            return job_id in self._feeds

    def reports(self, job_id: str, seen: int, wait_s: float) -> list[dict[str, Any]]:
        """The job's progress reports after the first ``seen``, waiting up to ``wait_s``
        for one; empty when none came or the job does not run in this process."""
        with self._fed:
            self._fed.wait_for(lambda: len(self._feeds.get(job_id, ())) > seen, wait_s)
            return list(self._feeds.get(job_id, ())[seen:])

    def _finish(
        self,
        job_id: str,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        error: str = "",
        error_code: str = "",
    ) -> None:
        self._store.finish(
            job_id, state, self._clock(), result=result, error=error, error_code=error_code
        )

    def _beat(self, job_id: str, done: threading.Event) -> None:
        # A quarter of the stale bound: three beats may be missed before others give up.
        while not done.wait(self._stale.total_seconds() / 4):
            try:
                self._store.beat(job_id, self._clock())
            except Exception:
                log.warning("billing job %s: heartbeat not written", job_id, exc_info=True)


def failure(job: JobRecord) -> errors.DomainError:
    """The error a FAILED or INTERRUPTED job ended with, as the domain error it was."""
    kind = getattr(errors, job.error_code, None)
    message = f"billing job {job.id} {job.state.value}: {job.error}"
    if (
        isinstance(kind, type)
        and issubclass(kind, errors.DomainError)
        and kind is not (errors.Throttled)
    ):
        return kind(message)
    return errors.FailedPrecondition(message)
