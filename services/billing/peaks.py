"""The usage peaks table kept up to date as samples are stored, and read at month end.

``record_samples`` runs in the transaction that stores the samples (the usage consumer's),
so the state and the samples it stands for commit together. Every code path that stores
usage samples must call it with exactly the samples it newly stored: the state of a
circuit's month is "all of its valid samples", and a sample stored without it would make a
month-end run bill from a state that lacks it.

Only the billed end's samples enter the peaks (domain/ends.py): the other end is
reconciled, never billed.

Rows are locked (SELECT ... FOR UPDATE on PostgreSQL; SQLite has one writer at a time) in
key order before they are merged, so two consumers never lose each other's update.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Row, Table, bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.billing.directory import load_directory
from services.billing.domain.ends import billed_side, side_of
from services.billing.domain.entities import BillingDirectory
from services.billing.domain.peaks import (
    Entry,
    KeptMonth,
    PeakState,
    billing_month,
    capacity_for,
    merge,
    micros,
    pack,
    sample_of,
    unpack,
)
from services.billing.domain.rating import BillingMonth
from services.billing.tables import UsagePeakRow

PEAKS = cast(Table, UsagePeakRow.__table__)
# (year, month, circuit id, time zone): the table's primary key, in its order.
Key = tuple[int, int, str, str]


@functools.cache
def _directory() -> BillingDirectory:
    return load_directory()


def record_samples(session: Session, samples: Sequence[Mapping[str, Any]]) -> None:
    """Add newly stored samples (circuit_id, tenant_id, side, interval_start,
    interval_seconds, bytes_in, bytes_out, valid, received_at) of the billed end to their
    months' peaks, in ``session``'s transaction (no side: the Singapore end)."""
    entries: dict[Key, list[Entry]] = defaultdict(list)
    received: dict[Key, datetime] = {}
    directory = _directory()
    # Looked up once per call and (tenant, side), and per (interval, zone): a batch holds
    # thousands of samples of a few tenants and intervals (a quarter of the loop's time
    # went to these lookups). Both are pure functions of their keys within a call.
    zones: dict[tuple[str, int], ZoneInfo | None] = {}
    months: dict[tuple[datetime, str], tuple[int, int]] = {}
    for raw in samples:
        if not raw["valid"]:
            continue  # never billed, so nothing to keep
        end = (raw["tenant_id"], raw.get("side", 0))
        if end not in zones:
            customer = directory.customer(end[0])
            billed = side_of(end[1]) is billed_side(customer.entity)
            zones[end] = customer.time_zone if billed else None
        zone = zones[end]
        if zone is None:
            continue  # the other end: reconciled, never billed
        start = raw["interval_start"]
        when = months.get((start, zone.key))
        if when is None:
            month = billing_month(start, zone)
            when = months[(start, zone.key)] = (month.year, month.month)
        key = (*when, raw["circuit_id"], zone.key)
        entries[key].append(
            (micros(start), raw["interval_seconds"], raw["bytes_in"], raw["bytes_out"])
        )
        received[key] = max(received.get(key, raw["received_at"]), raw["received_at"])
    if not entries:
        return
    keys = sorted(entries)
    _insert_missing(session, keys)
    rows = session.execute(
        select(PEAKS)
        .where(tuple_(PEAKS.c.year, PEAKS.c.month, PEAKS.c.circuit_id, PEAKS.c.time_zone)
               .in_(keys))
        .order_by(PEAKS.c.year, PEAKS.c.month, PEAKS.c.circuit_id, PEAKS.c.time_zone)
        .with_for_update()
    ).all()
    # Rows whose top lists did not change are updated without them (no rewrite of the
    # largest columns, usually a month's first few hundred samples only).
    light: list[dict[str, object]] = []
    full: list[dict[str, object]] = []
    for row in rows:
        key = (row.year, row.month, row.circuit_id, row.time_zone)
        before = _state(row)
        after = merge(before, entries[key], received[key])
        values = {"k_year": row.year, "k_month": row.month, "k_circuit": row.circuit_id,
                  "k_zone": row.time_zone, **_scalars(after)}
        if after.top_in is before.top_in and after.top_out is before.top_out:
            light.append(values)
        else:
            full.append(values | {
                "top_in": row.top_in if after.top_in is before.top_in else pack(after.top_in),
                "top_out": (
                    row.top_out if after.top_out is before.top_out else pack(after.top_out)
                ),
            })
    for changes in (light, full):
        if changes:
            session.execute(_UPDATE, changes)


_UPDATE = update(PEAKS).where(
    PEAKS.c.year == bindparam("k_year"),
    PEAKS.c.month == bindparam("k_month"),
    PEAKS.c.circuit_id == bindparam("k_circuit"),
    PEAKS.c.time_zone == bindparam("k_zone"),
)


def _insert_missing(session: Session, keys: Sequence[Key]) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(PEAKS).on_conflict_do_nothing(),
        [
            {
                "year": year, "month": month, "circuit_id": circuit, "time_zone": zone,
                "top_in": b"", "top_out": b"",
                **_scalars(PeakState(capacity_for(BillingMonth(year, month), ZoneInfo(zone)))),
            }
            for year, month, circuit, zone in keys
        ],
    )


def _state(row: Row[Any]) -> PeakState:
    return PeakState(
        capacity=row.capacity,
        samples=row.samples,
        first_start=row.first_start,
        last_start=row.last_start,
        last_received=row.last_received,
        top_in=unpack(row.top_in),
        top_out=unpack(row.top_out),
    )


def _scalars(state: PeakState) -> dict[str, object]:
    """Every column but the top lists."""
    billed = state.billed() if state.complete else None
    return {
        "capacity": state.capacity,
        "samples": state.samples,
        "first_start": state.first_start,
        "last_start": state.last_start,
        "last_received": state.last_received,
        "p95_in": b"" if billed is None else pack(billed[:1]),
        "p95_out": b"" if billed is None else pack(billed[1:]),
    }


def kept_months(session: Session, month: BillingMonth) -> dict[str, list[KeptMonth]]:
    """Every circuit's state rows of the month and its two neighbours (see peaks.usable),
    answers only: no top list."""
    ordinal = month.year * 12 + month.month - 1
    wanted = [(o // 12, o % 12 + 1) for o in (ordinal - 1, ordinal, ordinal + 1)]
    rows = session.execute(
        select(
            PEAKS.c.circuit_id, PEAKS.c.time_zone, PEAKS.c.year, PEAKS.c.month,
            PEAKS.c.samples, PEAKS.c.first_start, PEAKS.c.last_start, PEAKS.c.last_received,
            PEAKS.c.p95_in, PEAKS.c.p95_out,
        ).where(tuple_(PEAKS.c.year, PEAKS.c.month).in_(wanted))
    ).all()
    kept: dict[str, list[KeptMonth]] = defaultdict(list)
    for row in rows:
        inbound, outbound = unpack(row.p95_in), unpack(row.p95_out)
        kept[row.circuit_id].append(KeptMonth(
            row.circuit_id, row.time_zone, BillingMonth(row.year, row.month), row.samples,
            row.first_start, row.last_start, row.last_received,
            sample_of(inbound[0]) if inbound else None,
            sample_of(outbound[0]) if outbound else None,
        ))
    return dict(kept)
