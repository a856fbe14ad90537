"""Provisioning's metrics: sagas by outcome, step and approve-to-active latency, pending
confirmed commits per router, and whether each router answers.

The histograms and the counter are recorded after the transaction that moved the saga has
committed (services/common/metrics.after_commit): a handler rolled back and run again
counts once. Pending commits are read from the agent's batch ledger at each scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.common import metric_catalogue as catalogue
from services.common.metrics import (
    Reading,
    Registration,
    after_commit,
    counter,
    histogram,
    observe,
)
from services.common.timestamps import as_utc
from services.provisioning.domain.batch import UNRESOLVED
from services.provisioning.tables import AgentBatch

_SAGAS = counter(catalogue.SAGAS_FINISHED)
_STEP = histogram(catalogue.SAGA_STEP_DURATION)
_APPROVE_TO_ACTIVE = histogram(catalogue.APPROVE_TO_ACTIVE)



def step_left(session: Session, step: str, entered: datetime | None, now: datetime) -> None:
    if entered is None:
        return
    seconds = (now - as_utc(entered)).total_seconds()
    after_commit(session, lambda: _STEP.record(seconds, {"step": step}))


def saga_finished(
    session: Session, outcome: str, approved_at: datetime | None, now: datetime
) -> None:
    """``approved_at`` is given for a new circuit that is now active on both routers."""
    after_commit(session, lambda: _SAGAS.add(1, {"outcome": outcome}))
    if approved_at is not None:
        seconds = (now - approved_at).total_seconds()
        after_commit(session, lambda: _APPROVE_TO_ACTIVE.record(seconds))


class Reachability:
    """Whether the last NETCONF session each router was asked for opened (1) or not (0)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routers: dict[str, bool] = {}
        self._registration: Registration | None = None

    def opened(self, router: str, ok: bool) -> None:
        with self._lock:
            self._routers[router] = ok
            if self._registration is None:
                self._registration = observe(catalogue.ROUTER_REACHABLE, self.readings)

    def readings(self) -> list[Reading]:
        with self._lock:
            return [Reading(1 if ok else 0, {"router": r}) for r, ok in self._routers.items()]


REACHABILITY = Reachability()


def pending_commits(
    factory: sessionmaker[Session], routers: Iterable[str], now: datetime
) -> tuple[list[Reading], list[Reading]]:
    """Unresolved confirmed commits per router and the age of the oldest (0 when none)."""
    with factory() as session:
        rows = session.execute(
            select(AgentBatch.router_name, func.count(), func.min(AgentBatch.created_at))
            .where(AgentBatch.state.in_([s.value for s in UNRESOLVED]))
            .group_by(AgentBatch.router_name)
        ).all()
    found = {router: (int(count), as_utc(oldest)) for router, count, oldest in rows}
    counts, ages = [], []
    for router in sorted({*routers, *found}):
        count, oldest = found.get(router, (0, now))
        counts.append(Reading(count, {"router": router}))
        ages.append(Reading(max((now - oldest).total_seconds(), 0.0), {"router": router}))
    return counts, ages


def register_pending_commits(
    factory: sessionmaker[Session], routers: Iterable[str]
) -> list[Registration]:
    names = list(routers)

    def now() -> datetime:
        return datetime.now(UTC)

    return [
        observe(catalogue.PENDING_COMMITS, lambda: pending_commits(factory, names, now())[0]),
        observe(catalogue.PENDING_COMMIT_AGE, lambda: pending_commits(factory, names, now())[1]),
    ]


def register_out_of_sync(
    per_router: Callable[[], Mapping[str, int]], routers: Iterable[str]
) -> Registration:
    """Drifted circuits per router as the drift watch last saw them (0 for a clean one)."""
    names = list(routers)

    def readings() -> list[Reading]:
        found = per_router()
        return [Reading(found.get(router, 0), {"router": router})
                for router in sorted({*names, *found})]

    return observe(catalogue.CIRCUITS_OUT_OF_SYNC, readings)
