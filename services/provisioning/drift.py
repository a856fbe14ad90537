"""The continuous drift watch: every active circuit's configuration on its routers compared,
each ``IDC_PROVISIONING_DRIFT_INTERVAL_S``, with what the system deployed.

Each round reads every router's running configuration once (get-config only: no lock, no
edit), on a session of its own bounded by timeouts, all routers at once so a paused one
delays no other's report. The decisions are in :mod:`services.provisioning.domain.drift`;
this module stores each circuit end's record (``circuit_sync``) and publishes DriftDetected
and DriftCleared through the outbox, in the same transaction, only on a change of state.

A circuit with a saga under way, or whose intended state changed while the routers were
read, is left as it was for that round: the routers may rightly hold something in between.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, common_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as ops_pb2
from services.common.events import outbox
from services.common.grpc_server import AlarmCheck, Worker
from services.common.paging import Key, after
from services.common.timestamps import to_timestamp
from services.provisioning.coordinator import FINISHED_STEPS
from services.provisioning.domain.circuits import Side, circuit_end
from services.provisioning.domain.drift import (
    DriftKind,
    EndRecord,
    Observation,
    Publish,
    SyncStatus,
    gone,
    observe,
    out_of_sync_per_router,
    step,
    unreachable,
)
from services.provisioning.domain.observe import Leaves, SubinterfaceKey, intended_leaves
from services.provisioning.domain.observe import running_subinterfaces as parse_running
from services.provisioning.inventory import Device, Inventory
from services.provisioning.netconf import NetconfSession
from services.provisioning.tables import CircuitSync, IntendedCircuit, SagaRow, utcnow

log = logging.getLogger(__name__)

INTERVAL_SETTING = "IDC_PROVISIONING_DRIFT_INTERVAL_S"
DRIFT_ALARM = "circuit-drift"
# One read's bounds: an RPC, and opening the session (SSH and the router's <hello>).
READ_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0
KIND_PROTO = {
    DriftKind.MISSING: circuit_pb2.DRIFT_KIND_MISSING,
    DriftKind.DIFFERENT: circuit_pb2.DRIFT_KIND_DIFFERENT,
}
SYNC_STATE = {
    SyncStatus.IN_SYNC: ops_pb2.SYNC_STATE_IN_SYNC,
    SyncStatus.DRIFTED: ops_pb2.SYNC_STATE_DRIFTED,
    SyncStatus.UNKNOWN: ops_pb2.SYNC_STATE_UNKNOWN,
}

Reader = Callable[[Device], str]
Running = dict[SubinterfaceKey, Leaves]


def read_bounded(device: Device) -> str:
    """Running, read on a session of its own, every wait bounded (a paused router fails)."""
    session = NetconfSession(
        device, timeout_s=READ_TIMEOUT_S, connect_timeout_s=CONNECT_TIMEOUT_S
    )
    try:
        return session.running()
    finally:
        session.close()


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def to_record(row: CircuitSync) -> EndRecord:
    return EndRecord(
        circuit_id=row.circuit_id,
        router_name=row.router_name,
        status=SyncStatus(row.status),
        since=_aware(row.since) or row.since,
        checked_at=_aware(row.checked_at) or row.checked_at,
        last_seen_in_sync_at=_aware(row.last_seen_in_sync_at),
        reported=DriftKind(row.reported),
        reported_since=_aware(row.reported_since),
        detail=row.detail,
    )


def _store(row: CircuitSync, record: EndRecord) -> None:
    row.status = record.status.value
    row.since = record.since
    row.checked_at = record.checked_at
    row.last_seen_in_sync_at = record.last_seen_in_sync_at
    row.reported = record.reported.value
    row.reported_since = record.reported_since
    row.detail = record.detail


@dataclass(frozen=True)
class Snapshot:
    """The active circuits (parameters, when their intent last changed) and those with a
    saga under way, as the database holds them at one moment."""

    circuits: dict[str, tuple[common_pb2.CircuitParameters, datetime]]
    busy: frozenset[str]

    @classmethod
    def read(cls, session: Session) -> Snapshot:
        circuits = {}
        for row in session.scalars(
            select(IntendedCircuit).where(IntendedCircuit.status == "active")
        ):
            params = common_pb2.CircuitParameters()
            params.ParseFromString(row.parameters)
            circuits[row.circuit_id] = (params, row.updated_at)
        busy = session.scalars(
            select(SagaRow.circuit_id).where(SagaRow.step.not_in(FINISHED_STEPS))
        )
        return cls(circuits, frozenset(busy))

    def settled(self, now: Snapshot) -> set[str]:
        """The circuits whose intent held still from this snapshot to ``now``."""
        return {
            cid
            for cid, (_, changed) in self.circuits.items()
            if cid not in self.busy | now.busy and now.circuits.get(cid, (None, None))[1] == changed
        }


class DriftWatch(Worker):
    name = "drift-watch"

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        inventory: Inventory,
        circuit_events_topic: str,
        interval_s: float,
        read: Reader = read_bounded,
    ) -> None:
        self._factory = session_factory
        self._inventory = inventory
        self._topic = circuit_events_topic
        self._interval_s = interval_s
        self._read = read
        self._texts: list[str] = []

    def alarms(self) -> dict[str, AlarmCheck]:
        return {DRIFT_ALARM: lambda: list(self._texts)}

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                log.exception("drift watch round failed; trying again next round")
            if stop.wait(self._interval_s):
                return

    def run_once(self) -> list[tuple[EndRecord, Publish]]:
        """One round: every router read once, every settled circuit end's record updated;
        the events published (each with the record it was published for)."""
        with self._factory() as session:
            before = Snapshot.read(session)
        reads = self._read_all(before)
        now = utcnow()
        published: list[tuple[EndRecord, Publish]] = []
        with self._factory() as session, session.begin():
            after = Snapshot.read(session)
            settled = before.settled(after)
            rows = {(r.circuit_id, r.router_name): r for r in session.scalars(select(CircuitSync))}
            for row in rows.values():
                if row.circuit_id not in after.circuits and row.circuit_id not in after.busy:
                    record = to_record(row)
                    session.delete(row)
                    if gone(record) is Publish.CLEARED:
                        self._publish(session, row, record, record, Publish.CLEARED, now)
                        published.append((record, Publish.CLEARED))
            for circuit_id in sorted(settled):
                params = before.circuits[circuit_id][0]
                for side in (Side.SINGAPORE, Side.CHONGQING):
                    router = circuit_end(params, side).router_name
                    seen = self._observe(router, reads, params, side)
                    found = rows.get((circuit_id, router))
                    previous = to_record(found) if found is not None else None
                    row = found or CircuitSync(circuit_id=circuit_id, router_name=router,
                                               side=side.value, tenant_id=params.tenant_id)
                    if found is None:
                        session.add(row)
                    moved = step(previous, circuit_id, router, seen, now)
                    _store(row, moved.record)
                    if moved.publish is not None:
                        self._publish(session, row, previous or moved.record, moved.record,
                                      moved.publish, now)
                        published.append((moved.record, moved.publish))
            records = [to_record(r) for r in session.scalars(select(CircuitSync))]
        self._texts = [
            f"circuit {r.circuit_id} drifted on {r.router_name} ({r.reported.value}) since "
            f"{(r.reported_since or r.since).isoformat(timespec='seconds')}"
            for r in sorted(records, key=lambda r: (r.circuit_id, r.router_name))
            if r.status is SyncStatus.DRIFTED
        ]
        return published

    def _read_all(self, snapshot: Snapshot) -> Mapping[str, Running | str]:
        """Per router carrying a circuit to check: its sub-interfaces, or why not read."""
        names = {
            circuit_end(params, side).router_name
            for cid, (params, _) in snapshot.circuits.items()
            if cid not in snapshot.busy
            for side in (Side.SINGAPORE, Side.CHONGQING)
        }
        devices = [d for d in self._inventory if d.name in names]
        if not devices:
            return {}
        with ThreadPoolExecutor(len(devices), thread_name_prefix="drift-read") as pool:
            return dict(zip([d.name for d in devices], pool.map(self._read_one, devices),
                            strict=True))

    def _read_one(self, device: Device) -> Running | str:
        try:
            return parse_running(device.platform, self._read(device))
        except Exception as exc:  # whatever failed, nothing was learnt: unknown, not drift
            message = getattr(getattr(exc, "fault", None), "message", "") or str(exc)
            log.warning("drift watch cannot read %s: %s", device.name, message)
            return message or type(exc).__name__

    def _observe(
        self,
        router: str,
        reads: Mapping[str, Running | str],
        params: common_pb2.CircuitParameters,
        side: Side,
    ) -> Observation:
        device = self._inventory.get(router)
        if device is None:
            return unreachable("router not in the inventory")
        found = reads.get(router, "not read this round")
        if isinstance(found, str):
            return unreachable(found)
        end = circuit_end(params, side)
        return observe(intended_leaves(device.platform, end), found.get((end.interface, end.vlan)))

    def _publish(
        self,
        session: Session,
        row: CircuitSync,
        previous: EndRecord,
        record: EndRecord,
        what: Publish,
        now: datetime,
    ) -> None:
        """DriftDetected for ``record``'s drift, or DriftCleared of ``previous``'s."""
        event: circuit_pb2.DriftDetected | circuit_pb2.DriftCleared
        if what is Publish.DETECTED:
            event = circuit_pb2.DriftDetected(kind=KIND_PROTO[record.reported])
            event.drifted_since.CopyFrom(to_timestamp(record.reported_since or now))
            if record.last_seen_in_sync_at is not None:
                event.last_seen_in_sync_time.CopyFrom(to_timestamp(record.last_seen_in_sync_at))
            log.warning("circuit %s drifted on %s: %s", row.circuit_id, row.router_name,
                        record.detail)
        else:
            event = circuit_pb2.DriftCleared()
            if previous.reported_since is not None:
                event.drifted_since.CopyFrom(to_timestamp(previous.reported_since))
            log.info("circuit %s: drift on %s cleared", row.circuit_id, row.router_name)
        event.occurred_at.CopyFrom(to_timestamp(now))
        event.circuit_id = row.circuit_id
        event.tenant_id = row.tenant_id
        event.side = row.side  # type: ignore[assignment]
        event.router_name = row.router_name
        outbox.add(session, self._topic, row.circuit_id, event)

    def close(self) -> None:
        """Nothing to release: each read opens and closes its own session."""


def sync_statuses(
    factory: sessionmaker[Session],
    circuit_id: str = "",
    not_in_sync_only: bool = False,
    start_after: Key | None = None,
    limit: int | None = None,
) -> list[CircuitSync]:
    """The stored records, by circuit id, Singapore first (``limit`` of them after the
    (circuit id, side) key ``start_after``: all by default)."""
    key = (CircuitSync.circuit_id, CircuitSync.side)
    query = select(CircuitSync).order_by(*key)
    if start_after is not None:
        query = query.where(after(key, start_after, descending=False))
    if circuit_id:
        query = query.where(CircuitSync.circuit_id == circuit_id)
    if not_in_sync_only:
        query = query.where(CircuitSync.status != SyncStatus.IN_SYNC.value)
    query = query.limit(limit)
    with factory() as session:
        rows = list(session.scalars(query))
        session.expunge_all()
    return rows


def sync_status_proto(row: CircuitSync) -> ops_pb2.CircuitSyncStatus:
    record = to_record(row)
    status = ops_pb2.CircuitSyncStatus(
        circuit_id=record.circuit_id,
        device_name=record.router_name,
        side=row.side,  # type: ignore[arg-type]
        state=SYNC_STATE[record.status],
        since=to_timestamp(record.since),
        check_time=to_timestamp(record.checked_at),
        detail=record.detail,
        drift_reported=record.reported is not DriftKind.NONE,
    )
    if record.last_seen_in_sync_at is not None:
        status.last_seen_in_sync_time.CopyFrom(to_timestamp(record.last_seen_in_sync_at))
    return status


def out_of_sync_circuits_per_router(factory: sessionmaker[Session]) -> dict[str, int]:
    """Per router: how many circuits the watch last saw drifted on it (for a gauge)."""
    return out_of_sync_per_router(to_record(r) for r in sync_statuses(factory))
