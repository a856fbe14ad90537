"""A circuit's health for its customer, from the drift events provisioning publishes: the
worst side wins, nothing of the routers shows, stale and cleared events handled. The domain
alone, then the handler on a SQLite file (the events handed over as the consumer would)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.order.v1 import circuit_pb2
from idc.type.v1 import side_pb2
from services.common import db
from services.order import convert, store
from services.order.app import MIGRATIONS
from services.order.convert import timestamp
from services.order.domain.catalogue import load_catalogue
from services.order.domain.health import (
    DIFFERENT,
    MISSING,
    Health,
    SideDrift,
    circuit_health,
)
from services.order.health import record_drift
from services.order.tables import CircuitRow
from services.order.workers import CircuitEventHandler

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SG, CQ = side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING
H = circuit_pb2.CircuitHealth


def test_the_worst_side_wins_since_its_earliest_drift() -> None:
    assert circuit_health([]) == (Health.IN_SYNC, None)
    later = T0 + timedelta(minutes=5)
    assert circuit_health([SideDrift(DIFFERENT, later), SideDrift(DIFFERENT, T0)]) == (
        Health.DRIFT_BEING_REPAIRED, T0)
    assert circuit_health([SideDrift(DIFFERENT, T0), SideDrift(MISSING, later)]) == (
        Health.OUT_OF_SERVICE, later)
    assert circuit_health([SideDrift(MISSING, later), SideDrift(DIFFERENT, T0)]) == (
        Health.OUT_OF_SERVICE, later)


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'order.db'}"
    db.migrate(url, MIGRATIONS)
    engine = db.make_engine(url)
    yield db.make_session_factory(engine)
    engine.dispose()


def active_circuit(factory: sessionmaker[Session], circuit_id: str = "cct-1") -> str:
    with factory() as session, session.begin():
        session.add(CircuitRow(
            id=circuit_id, tenant_id="acme", state="ACTIVE", a_port_id="sg-edge-1:xe-0/0/1",
            z_port_id="cq-edge-1:XGE0/0/1", a_vlan=100, z_vlan=100, bandwidth_mbps=100,
            burst_mbps=0, term_months=12, currency="SGD", mrc="1.00", nrc="0.00",
            burst_price="0.00", price_book_version="v1", customer_reference="",
            description="", created_by_order_id="o-1", pending_order_id=None, created_at=T0,
            updated_at=T0, activated_at=T0, disconnected_at=None))
    return circuit_id


def detected(side: int, kind: int, at: datetime, circuit_id: str = "cct-1"
             ) -> circuit_events.DriftDetected:
    return circuit_events.DriftDetected(
        circuit_id=circuit_id, tenant_id="acme", side=side, router_name="sg-edge-1",
        kind=kind, occurred_at=timestamp(at), drifted_since=timestamp(at))  # type: ignore[arg-type]


def cleared(side: int, at: datetime, circuit_id: str = "cct-1") -> circuit_events.DriftCleared:
    return circuit_events.DriftCleared(
        circuit_id=circuit_id, tenant_id="acme", side=side, router_name="sg-edge-1",
        occurred_at=timestamp(at))  # type: ignore[arg-type]


def deliver(factory: sessionmaker[Session], *events: circuit_events.DriftDetected
            | circuit_events.DriftCleared) -> circuit_pb2.Circuit:
    """Each event handled in its own transaction; the circuit as GetCircuit shows it."""
    for event in events:
        with factory() as session, session.begin():
            record_drift(session, event, T0)
    with factory() as session:
        return convert.circuit(load_catalogue(), store.get_circuit(session, "cct-1", "acme"))


def test_an_active_circuit_is_in_sync_since_activation(factory: sessionmaker[Session]) -> None:
    active_circuit(factory)
    shown = deliver(factory)
    assert shown.health == H.CIRCUIT_HEALTH_IN_SYNC
    assert shown.health_since.ToDatetime(tzinfo=UTC) == T0


def test_a_lost_end_is_out_of_service_until_cleared(factory: sessionmaker[Session]) -> None:
    active_circuit(factory)
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    shown = deliver(factory, detected(CQ, circuit_events.DRIFT_KIND_MISSING, t1))
    assert shown.health == H.CIRCUIT_HEALTH_OUT_OF_SERVICE
    assert shown.health_since.ToDatetime(tzinfo=UTC) == t1
    shown = deliver(factory, cleared(CQ, t2))
    assert shown.health == H.CIRCUIT_HEALTH_IN_SYNC
    assert shown.health_since.ToDatetime(tzinfo=UTC) == t2


def test_an_altered_end_is_a_drift_being_repaired_and_a_lost_one_is_worse(
    factory: sessionmaker[Session],
) -> None:
    active_circuit(factory)
    t1, t2, t3 = (T0 + timedelta(minutes=m) for m in (1, 2, 3))
    shown = deliver(factory, detected(SG, circuit_events.DRIFT_KIND_DIFFERENT, t1))
    assert shown.health == H.CIRCUIT_HEALTH_DRIFT_BEING_REPAIRED
    shown = deliver(factory, detected(CQ, circuit_events.DRIFT_KIND_MISSING, t2))
    assert shown.health == H.CIRCUIT_HEALTH_OUT_OF_SERVICE
    shown = deliver(factory, cleared(CQ, t3))
    assert shown.health == H.CIRCUIT_HEALTH_DRIFT_BEING_REPAIRED, "singapore still drifts"
    assert shown.health_since.ToDatetime(tzinfo=UTC) == t1


def test_a_stale_event_changes_nothing_and_unknown_circuits_are_skipped(
    factory: sessionmaker[Session],
) -> None:
    active_circuit(factory)
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    shown = deliver(factory, detected(CQ, circuit_events.DRIFT_KIND_MISSING, t2),
                    cleared(CQ, t1))
    assert shown.health == H.CIRCUIT_HEALTH_OUT_OF_SERVICE
    deliver(factory, detected(CQ, circuit_events.DRIFT_KIND_MISSING, t1, circuit_id="cct-x"))


def test_the_consumer_routes_drift_events_here(factory: sessionmaker[Session]) -> None:
    active_circuit(factory)

    class App:
        def clock(self) -> datetime:
            return T0

    handler = CircuitEventHandler(App())  # type: ignore[arg-type]
    with factory() as session, session.begin():
        handler(session, detected(SG, circuit_events.DRIFT_KIND_MISSING, T0), None)  # type: ignore[arg-type]
    assert deliver(factory).health == H.CIRCUIT_HEALTH_OUT_OF_SERVICE
