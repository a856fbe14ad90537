"""The billing service's metrics: samples ingested and set aside, ingest lag, invoices.

Counters are recorded after the ingest transaction commits (a batch rolled back and
consumed again counts once). The ingest lag is read at each scrape: per billable circuit
(its last change is not a disconnect) and metered router, the age of the end of the newest
sample, or of the activation when no sample has arrived yet: what says whether a month's
usage is complete before a run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.billing.domain.contracts import ChangeKind
from services.billing.tables import BillingJobRow, CircuitChangeRow, InvoiceRow, UsageSampleRow
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

if TYPE_CHECKING:
    from services.billing.domain.rating import BillingMonth
    from services.billing.domain.reconciliation import Reconciliation

_INGESTED = counter(catalogue.SAMPLES_INGESTED)
_CONFLICTS = counter(catalogue.USAGE_CONFLICTS)
RUN_DURATION = histogram(catalogue.BILLING_RUN_DURATION)


def ingested(session: Session, stored: int, set_aside: int) -> None:
    def record() -> None:
        if stored:
            _INGESTED.add(stored)
        if set_aside:
            _CONFLICTS.add(set_aside)

    if stored or set_aside:
        after_commit(session, record)



def ingest_lag(factory: sessionmaker[Session], now: Callable[[], datetime]) -> list[Reading]:
    with factory() as session:
        latest = (
            select(func.max(CircuitChangeRow.id)).group_by(CircuitChangeRow.circuit_id)
            .scalar_subquery()
        )
        billable = {
            circuit: as_utc(effective)
            for circuit, kind, effective in session.execute(
                select(CircuitChangeRow.circuit_id, CircuitChangeRow.kind,
                       CircuitChangeRow.effective_time)
                .where(CircuitChangeRow.id.in_(latest))
            )
            if kind != ChangeKind.DISCONNECTED.value
        }
        newest = session.execute(
            select(UsageSampleRow.circuit_id, UsageSampleRow.router_name,
                   func.max(UsageSampleRow.interval_start),
                   func.max(UsageSampleRow.interval_seconds))
            .where(UsageSampleRow.circuit_id.in_(billable))
            .group_by(UsageSampleRow.circuit_id, UsageSampleRow.router_name)
        ).all()
    moment = now()
    readings = [
        Reading(max((moment - as_utc(start) - timedelta(seconds=seconds)).total_seconds(), 0.0),
                {"circuit": circuit, "router": router})
        for circuit, router, start, seconds in newest
    ]
    unsampled = billable.keys() - {circuit for circuit, *_ in newest}
    readings += [
        Reading(max((moment - billable[circuit]).total_seconds(), 0.0),
                {"circuit": circuit, "router": ""})
        for circuit in sorted(unsampled)
    ]
    return readings


def invoices_by_state(factory: sessionmaker[Session]) -> list[Reading]:
    with factory() as session:
        counts = session.execute(
            select(InvoiceRow.state, func.count()).group_by(InvoiceRow.state)
        ).all()
    return [Reading(int(count), {"state": state}) for state, count in counts]


def jobs_by_state(factory: sessionmaker[Session]) -> list[Reading]:
    """INTERRUPTED or FAILED jobs growing is what an operator looks at (see README)."""
    with factory() as session:
        counts = session.execute(
            select(BillingJobRow.kind, BillingJobRow.state, func.count())
            .group_by(BillingJobRow.kind, BillingJobRow.state)
        ).all()
    return [Reading(int(count), {"kind": kind, "state": state}) for kind, state, count in counts]


# Month ("YYYY-MM") -> circuits outside tolerance when last reconciled; the newest few.
_DIFFERENCES: dict[str, int] = {}
_DIFFERENCES_LOCK = threading.Lock()
_MONTHS_KEPT = 3


def record_reconciliation(month: BillingMonth, report: Sequence[Reconciliation]) -> None:
    label = f"{month.year:04d}-{month.month:02d}"
    with _DIFFERENCES_LOCK:
        _DIFFERENCES[label] = sum(not r.within_tolerance for r in report)
        for old in sorted(_DIFFERENCES)[:-_MONTHS_KEPT]:
            del _DIFFERENCES[old]


def reconciliation_differences() -> list[Reading]:
    with _DIFFERENCES_LOCK:
        return [Reading(count, {"month": month}) for month, count in sorted(_DIFFERENCES.items())]


def register_gauges(
    factory: sessionmaker[Session], now: Callable[[], datetime]
) -> list[Registration]:
    return [
        observe(catalogue.INGEST_LAG, lambda: ingest_lag(factory, now)),
        observe(catalogue.INVOICES, lambda: invoices_by_state(factory)),
        observe(catalogue.BILLING_JOBS, lambda: jobs_by_state(factory)),
        observe(catalogue.RECONCILIATION_DIFFERENCES, reconciliation_differences),
    ]
