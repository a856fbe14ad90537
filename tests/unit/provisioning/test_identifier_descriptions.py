"""Provisioning migration 0007: circuits intended (and planned) with the customer's free
text carry the identifier-only description afterwards; the drift watch then reports the
routers still holding the old text, and a redeploy of the intended circuit clears it."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from idc.events.v1 import common_pb2
from idc.events.v1 import order_pb2 as order_events
from idc.type.v1 import circuit_operation_pb2
from services.common.db import make_engine, make_session_factory, migrate
from services.provisioning.app import MIGRATIONS
from services.provisioning.drift import DriftWatch
from services.provisioning.tables import IntendedCircuit, PlannedOrder
from tests.integration.provisioning.helpers import circuit
from tests.unit.provisioning.test_drift_watch import INVENTORY, FakeRouters, intend

OLD_TEXT = "Acme primary link, ask Ann Lee"


def test_old_descriptions_become_identifiers_and_drift_until_redeployed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'provisioning.db'}"
    migrate(url, MIGRATIONS, "provisioning_0006")
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        old = circuit(130, description=OLD_TEXT)
        intend(factory, old)
        with factory() as session, session.begin():
            session.add(PlannedOrder(
                order_id="ord-1", circuit_id=old.circuit_id,
                operation=circuit_operation_pb2.CIRCUIT_OPERATION_CREATE,
                created=order_events.OrderCreated(order_id="ord-1",
                                                  circuit=old).SerializeToString()))
        routers = FakeRouters()
        routers.carry(old)  # deployed before the upgrade, with the customer's text
        assert all(OLD_TEXT in xml for xml in routers.running.values())

        migrate(url, MIGRATIONS)
        with factory() as session:
            intended = common_pb2.CircuitParameters.FromString(
                session.scalars(sa.select(IntendedCircuit.parameters)).one())
            planned = order_events.OrderCreated.FromString(
                session.scalars(sa.select(PlannedOrder.created)).one())
        assert intended.description == planned.circuit.description == "IDC tenant-1"
        assert (intended.circuit_id, intended.a_end, intended.bandwidth_mbps) \
            == (old.circuit_id, old.a_end, old.bandwidth_mbps)

        watch = DriftWatch(factory, INVENTORY, "circuit-events", 60.0, read=routers.read)
        assert sorted(p.value for _, p in watch.run_once()) == ["detected", "detected"]
        routers.carry(intended)  # what Redeploy writes: the intended circuit
        assert sorted(p.value for _, p in watch.run_once()) == ["cleared", "cleared"]
        assert not any(OLD_TEXT in xml for xml in routers.running.values())
        assert all(f"{old.circuit_id} IDC tenant-1" in xml for xml in routers.running.values())
    finally:
        engine.dispose()
