"""Reads of the stored usage: samples per end, gap volumes, conflicts, the kept peaks.

The base of SqlBillingStore (store.py); each method is one read transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.billing.domain.ends import Side
from services.billing.domain.peaks import KeptMonth
from services.billing.domain.percentile import Sample
from services.billing.domain.rating import BillingMonth
from services.billing.domain.reconciliation import GapVolume
from services.billing.peaks import kept_months
from services.billing.tables import (
    BoostChangeRow,
    CircuitChangeRow,
    GapVolumeRow,
    UsageConflictRow,
    UsageSampleRow,
)
from services.common.timestamps import as_utc


@dataclass(frozen=True)
class UsageRecord:
    interval_start: datetime
    interval_seconds: int
    bytes_in: int
    bytes_out: int
    valid: bool
    router_name: str


class UsageReads:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory

    def samples(
        self, circuit_id: str, start: datetime, end: datetime, as_of: datetime,
        side: Side = Side.SINGAPORE,
    ) -> list[Sample]:
        """The circuit's valid samples at ``side`` starting in [start, end), received up to
        ``as_of``."""
        with self._factory() as session:
            rows = session.execute(
                select(
                    UsageSampleRow.interval_start,
                    UsageSampleRow.bytes_in,
                    UsageSampleRow.bytes_out,
                    UsageSampleRow.interval_seconds,
                ).where(
                    UsageSampleRow.circuit_id == circuit_id,
                    UsageSampleRow.side == int(side),
                    UsageSampleRow.interval_start >= start,
                    UsageSampleRow.interval_start < end,
                    UsageSampleRow.valid.is_(True),
                    UsageSampleRow.received_at <= as_of,
                )
            ).all()
        return [Sample(r[0], r[1], r[2], r[3]) for r in rows]

    def tenant_of(self, circuit_id: str) -> str | None:
        """The tenant billed for the circuit (its latest change)."""
        with self._factory() as session:
            return session.scalars(
                select(CircuitChangeRow.tenant_id)
                .where(CircuitChangeRow.circuit_id == circuit_id)
                .order_by(CircuitChangeRow.effective_time.desc(), CircuitChangeRow.id.desc())
            ).first()

    def tenants(self) -> set[str]:
        """Every tenant with a circuit change stored."""
        with self._factory() as session:
            return set(session.scalars(select(CircuitChangeRow.tenant_id).distinct()))

    def usage(
        self, circuit_id: str, start: datetime, end: datetime, side: Side = Side.SINGAPORE
    ) -> list[UsageRecord]:
        """Every stored sample (valid or not) of the circuit at ``side`` starting in
        [start, end)."""
        with self._factory() as session:
            rows = session.scalars(
                select(UsageSampleRow)
                .where(
                    UsageSampleRow.circuit_id == circuit_id,
                    UsageSampleRow.side == int(side),
                    UsageSampleRow.interval_start >= start,
                    UsageSampleRow.interval_start < end,
                )
                .order_by(UsageSampleRow.interval_start)
            ).all()
        return [
            UsageRecord(r.interval_start, r.interval_seconds, r.bytes_in, r.bytes_out,
                        r.valid, r.router_name)
            for r in rows
        ]

    def gaps(
        self, circuit_ids: Sequence[str], start: datetime, end: datetime,
        as_of: datetime | None = None,
    ) -> dict[tuple[str, Side], list[GapVolume]]:
        """Gap volumes of these circuits starting in [start, end) (received up to ``as_of``),
        by circuit and side, oldest first."""
        query = select(GapVolumeRow).where(
            GapVolumeRow.circuit_id.in_(circuit_ids),
            GapVolumeRow.interval_start >= start,
            GapVolumeRow.interval_start < end,
        )
        if as_of is not None:
            query = query.where(GapVolumeRow.received_at <= as_of)
        gaps: dict[tuple[str, Side], list[GapVolume]] = defaultdict(list)
        with self._factory() as session:
            for r in session.scalars(query.order_by(GapVolumeRow.interval_start)):
                gaps[(r.circuit_id, Side(r.side))].append(GapVolume(
                    r.interval_start, r.interval_seconds, r.intervals, r.bytes_in,
                    r.bytes_out, r.valid,
                ))
        return dict(gaps)

    def end_totals(
        self, circuit_ids: Sequence[str], start: datetime, end: datetime, as_of: datetime
    ) -> dict[tuple[str, Side], tuple[int, int, int]]:
        """(bytes in, bytes out, samples) of the valid samples in [start, end) received up
        to ``as_of``, by circuit and side (one aggregate query)."""
        with self._factory() as session:
            rows = session.execute(
                select(
                    UsageSampleRow.circuit_id, UsageSampleRow.side,
                    func.sum(UsageSampleRow.bytes_in), func.sum(UsageSampleRow.bytes_out),
                    func.count(),
                ).where(
                    UsageSampleRow.circuit_id.in_(circuit_ids),
                    UsageSampleRow.interval_start >= start,
                    UsageSampleRow.interval_start < end,
                    UsageSampleRow.valid.is_(True),
                    UsageSampleRow.received_at <= as_of,
                ).group_by(UsageSampleRow.circuit_id, UsageSampleRow.side)
            ).all()
        return {
            (circuit_id, Side(side)): (int(bytes_in), int(bytes_out), int(count))
            for circuit_id, side, bytes_in, bytes_out, count in rows
        }

    def news_since(
        self, circuit_ids: Sequence[str], start: datetime, end: datetime,
        after: datetime, until: datetime,
    ) -> bool:
        """Did usage, a change or a boost's raise or revert for these circuits in
        [start, end) arrive in (after, until]?"""
        with self._factory() as session:
            late_usage = session.scalar(
                select(
                    exists().where(
                        UsageSampleRow.circuit_id.in_(circuit_ids),
                        UsageSampleRow.interval_start >= start,
                        UsageSampleRow.interval_start < end,
                        UsageSampleRow.received_at > after,
                        UsageSampleRow.received_at <= until,
                    )
                )
            )
            late_changes = [
                session.scalar(select(exists().where(
                    model.circuit_id.in_(circuit_ids), begins < end,
                    model.received_at > after, model.received_at <= until,
                )))
                for model, begins in (
                    (CircuitChangeRow, CircuitChangeRow.effective_time),
                    (BoostChangeRow, BoostChangeRow.start_time),
                )
            ]
        return bool(late_usage or any(late_changes))

    def conflicts_between(self, start: datetime, end: datetime) -> list[tuple[str, datetime]]:
        """(circuit, interval start) of every report set aside with a start in [start, end)."""
        with self._factory() as session:
            rows = session.execute(
                select(UsageConflictRow.circuit_id, UsageConflictRow.interval_start).where(
                    UsageConflictRow.interval_start >= start,
                    UsageConflictRow.interval_start < end,
                )
            ).all()
        return [(circuit_id, interval_start) for circuit_id, interval_start in rows]

    def newest_usage(self) -> list[tuple[str, datetime]]:
        """Per meter router, the end of the newest interval stored from it."""
        with self._factory() as session:
            rows = session.execute(
                select(UsageSampleRow.router_name, func.max(UsageSampleRow.interval_start),
                       func.max(UsageSampleRow.interval_seconds))
                .group_by(UsageSampleRow.router_name)
            ).all()
        return sorted(
            (router, as_utc(start) + timedelta(seconds=seconds)) for router, start, seconds in rows
        )

    def kept_months(self, month: BillingMonth) -> dict[str, list[KeptMonth]]:
        with self._factory() as session:
            return kept_months(session, month)
