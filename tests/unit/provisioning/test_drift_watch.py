"""The drift watch over a migrated SQLite database and fake router reads: records stored,
events staged in the outbox only on a change of state, busy circuits left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, common_pb2
from services.common.events import OutboxRow
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.domain.drift import SyncStatus
from services.provisioning.domain.faults import FaultKind, RouterFailure, RouterFault
from services.provisioning.drift import (
    DRIFT_ALARM,
    DriftWatch,
    out_of_sync_circuits_per_router,
    sync_statuses,
)
from services.provisioning.inventory import Device, Inventory
from services.provisioning.rendering import Renderer
from services.provisioning.tables import IntendedCircuit, SagaRow
from tests.integration.provisioning.helpers import circuit

TOPIC = "circuit-events"
PLATFORMS = {"sg-edge-1": ("sg", "openconfig"), "cq-edge-1": ("cq", "cq-vendor")}
INVENTORY = Inventory(
    Device(name, telco, f"{telco}-site-1", platform, platform, "127.0.0.1", 830, "agent",
           Path("/nonexistent/key"), Path("/nonexistent/known_hosts"))
    for name, (telco, platform) in PLATFORMS.items()
)
EMPTY = "<data/>"


class FakeRouters:
    """What each router's get-config answers: running XML, or a failure."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}
        self.down: set[str] = set()
        self.reads = 0

    def carry(self, params: common_pb2.CircuitParameters) -> None:
        for side in (Side.SINGAPORE, Side.CHONGQING):
            end = circuit_end(params, side)
            platform = PLATFORMS[end.router_name][1]
            self.running[end.router_name] = Renderer().render(
                platform, Operation.CREATE, end).content

    def read(self, device: Device) -> str:
        self.reads += 1
        if device.name in self.down:
            raise RouterFailure(RouterFault(FaultKind.TIMEOUT, device.name, "no answer in 10 s"))
        return self.running.get(device.name, EMPTY)


@pytest.fixture
def routers() -> FakeRouters:
    return FakeRouters()


@pytest.fixture
def watch(factory: sessionmaker[Session], routers: FakeRouters) -> DriftWatch:
    return DriftWatch(factory, INVENTORY, TOPIC, 60.0, read=routers.read)


def intend(factory: sessionmaker[Session], params: common_pb2.CircuitParameters,
           status: str = "active") -> None:
    with factory() as session, session.begin():
        session.merge(IntendedCircuit(circuit_id=params.circuit_id, status=status,
                                      parameters=params.SerializeToString(), price=b"",
                                      tenant_id=params.tenant_id))


def staged(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    """(event type, circuit id) of every outbox row, in order."""
    with factory() as session:
        return [(r.event_type.rsplit(".", 1)[-1], (r.key or b"").decode())
                for r in session.scalars(select(OutboxRow).order_by(OutboxRow.id))]


def test_deleted_behind_the_back_is_detected_once_and_cleared_once(
    watch: DriftWatch, factory: sessionmaker[Session], routers: FakeRouters
) -> None:
    params = circuit(120)
    intend(factory, params)
    routers.carry(params)
    assert watch.run_once() == []
    assert {r.status for r in sync_statuses(factory)} == {SyncStatus.IN_SYNC.value}

    del routers.running["cq-edge-1"]
    assert [p.value for _, p in watch.run_once()] == ["detected"]
    assert [p for _, p in watch.run_once()] == [], "published on the change only"
    assert staged(factory) == [("DriftDetected", params.circuit_id)]
    assert out_of_sync_circuits_per_router(factory) == {"sg-edge-1": 0, "cq-edge-1": 1}
    [alarm] = watch.alarms()[DRIFT_ALARM]()
    assert alarm.startswith(f"circuit {params.circuit_id} drifted on cq-edge-1 (missing) since")
    with factory() as session:
        row = session.scalars(select(OutboxRow)).one()
    event = circuit_pb2.DriftDetected()
    event.ParseFromString(row.payload)
    assert (event.router_name, event.kind, event.tenant_id) == (
        "cq-edge-1", circuit_pb2.DRIFT_KIND_MISSING, params.tenant_id)
    assert event.HasField("last_seen_in_sync_time")

    routers.carry(params)  # a redeploy put it back
    assert [p.value for _, p in watch.run_once()] == ["cleared"]
    assert staged(factory)[-1] == ("DriftCleared", params.circuit_id)
    assert watch.alarms()[DRIFT_ALARM]() == []


def test_an_unreachable_router_is_unknown_not_drift(
    watch: DriftWatch, factory: sessionmaker[Session], routers: FakeRouters
) -> None:
    params = circuit(121)
    intend(factory, params)
    routers.carry(params)
    watch.run_once()
    routers.down.add("sg-edge-1")
    del routers.running["sg-edge-1"]  # what it holds cannot be known: not read
    assert watch.run_once() == []
    by_router = {r.router_name: r for r in sync_statuses(factory)}
    assert by_router["sg-edge-1"].status == SyncStatus.UNKNOWN.value
    assert "no answer in 10 s" in by_router["sg-edge-1"].detail
    assert by_router["cq-edge-1"].status == SyncStatus.IN_SYNC.value
    assert staged(factory) == []
    assert [r.circuit_id for r in sync_statuses(factory, not_in_sync_only=True)] == [
        params.circuit_id]


def test_a_circuit_with_a_saga_under_way_is_left_alone(
    watch: DriftWatch, factory: sessionmaker[Session], routers: FakeRouters
) -> None:
    params = circuit(122)
    intend(factory, params)
    with factory() as session, session.begin():
        session.add(SagaRow(saga_id="s-1", circuit_id=params.circuit_id, operation=2,
                            step="preparing", state={}, approved=b""))
    assert watch.run_once() == [], "the routers may rightly hold something in between"
    assert sync_statuses(factory) == []
    assert routers.reads == 0, "no router read for nothing"


def test_a_disconnected_circuit_is_dropped_and_its_drift_cleared(
    watch: DriftWatch, factory: sessionmaker[Session], routers: FakeRouters
) -> None:
    params = circuit(123)
    intend(factory, params)
    assert len(watch.run_once()) == 2, "absent from both routers"
    intend(factory, params, status="deleted")
    assert [p.value for _, p in watch.run_once()] == ["cleared", "cleared"]
    assert sync_statuses(factory) == []
