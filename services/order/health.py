"""The order service's side of the drift watch: DriftDetected and DriftCleared from the
circuit events topic kept per circuit side, and summed up on the circuit (its ``health``,
shown on GetCircuit). Idempotent: the inbox skips a redelivered event, and an event older
than what a side last recorded is ignored."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from idc.events.v1 import circuit_pb2 as circuit_events
from services.order.domain.health import (
    DIFFERENT,
    MISSING,
    Health,
    SideDrift,
    circuit_health,
)
from services.order.tables import CircuitDriftRow, CircuitRow

log = logging.getLogger(__name__)

DRIFT_EVENTS = (circuit_events.DriftDetected, circuit_events.DriftCleared)
KIND_OF_PROTO = {
    circuit_events.DRIFT_KIND_MISSING: MISSING,
    circuit_events.DRIFT_KIND_DIFFERENT: DIFFERENT,
}


def _at(stamp: object, fallback: datetime) -> datetime:
    seconds = getattr(stamp, "seconds", 0)
    return stamp.ToDatetime(tzinfo=UTC) if seconds else fallback  # type: ignore[attr-defined]


def record_drift(
    session: Session, event: circuit_events.DriftDetected | circuit_events.DriftCleared,
    received_at: datetime,
) -> None:
    circuit = session.get(CircuitRow, event.circuit_id, with_for_update=True)
    if circuit is None:
        log.warning("%s for unknown circuit %s ignored", type(event).__name__, event.circuit_id)
        return
    at = _at(event.occurred_at, received_at)
    row = session.get(CircuitDriftRow, (event.circuit_id, int(event.side)))
    if row is not None and row.reported_at > at:
        log.info("%s of circuit %s older than its side's last report ignored",
                 type(event).__name__, event.circuit_id)
        return
    if isinstance(event, circuit_events.DriftDetected):
        if event.kind not in KIND_OF_PROTO:
            raise ValueError(f"DriftDetected for circuit {event.circuit_id} without a kind")
        row = row or CircuitDriftRow(circuit_id=event.circuit_id, side=int(event.side))
        row.kind = KIND_OF_PROTO[event.kind]
        row.since = _at(event.drifted_since, at)
        row.reported_at = at
        session.add(row)
    elif row is not None:
        session.delete(row)
    session.flush()
    drifts = session.scalars(
        select(CircuitDriftRow).where(CircuitDriftRow.circuit_id == event.circuit_id))
    health, since = circuit_health(SideDrift(d.kind, d.since) for d in drifts)
    if health is Health.IN_SYNC:
        since = at if circuit.health else circuit.health_since
    if (circuit.health, circuit.health_since) != (health.value, since):
        circuit.health, circuit.health_since = health.value, since
        circuit.updated_at = at
        log.info("circuit %s health: %s since %s", circuit.id, health.name, since)
