"""The meter's database: the circuit ends it meters and the last reading of each.

Counter values are stored as decimal text: a 64-bit unsigned counter does not fit a signed
BIGINT, and SQLite would turn a larger NUMERIC into a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import SchemaItem

from services.billing.meter.domain import Reading
from services.common.db import new_metadata

metadata = new_metadata()


def _circuit_schema(primary_key: tuple[str, ...] = ("circuit_id", "side")) -> list[SchemaItem]:
    return [
        Column("circuit_id", String(64), nullable=False),
        Column("tenant_id", String(64), nullable=False),
        Column("side", Integer(), nullable=False),
        Column("router_name", String(128), nullable=False),
        Column("interface_name", String(128), nullable=False),
        Column("vlan_id", Integer(), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint(*primary_key, name="pk_meter_circuits"),
    ]


def _reading_schema() -> list[SchemaItem]:
    return [
        Column("circuit_id", String(64), nullable=False),
        Column("router_name", String(128), nullable=False),
        Column("interface_name", String(160), nullable=False),
        Column("in_octets", String(20), nullable=False),
        Column("out_octets", String(20), nullable=False),
        Column("read_at", DateTime(timezone=True), nullable=False),
        Column("discontinuity_time", DateTime(timezone=True), nullable=True),
        PrimaryKeyConstraint("circuit_id", "router_name", name="pk_meter_readings"),
    ]


circuits_table = Table("meter_circuits", metadata, *_circuit_schema())
readings_table = Table("meter_readings", metadata, *_reading_schema())


def create_meter_tables(op: object) -> None:
    """Create the meter's tables from an Alembic migration (``op`` is ``alembic.op``)."""
    create_table = getattr(op, "create_table")  # noqa: B009 - alembic.op is untyped here
    create_table("meter_circuits", *_circuit_schema(primary_key=("circuit_id",)))
    create_table("meter_readings", *_reading_schema())


def create_circuit_ends_table(op: object, name: str) -> None:
    """The circuits table keyed by circuit and side (migration 0005 builds it as ``name``)."""
    getattr(op, "create_table")(name, *_circuit_schema())  # noqa: B009


@dataclass(frozen=True)
class MeteredCircuit:
    """An active circuit and one end of it the meter reads (one per side)."""

    circuit_id: str
    tenant_id: str
    side: int
    router_name: str
    interface_name: str
    vlan_id: int


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything the meter stores is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class MeterStore:
    """Reads and writes of the meter's tables inside the caller's session."""

    def active_circuits(self, session: Session) -> list[MeteredCircuit]:
        rows = session.execute(
            select(circuits_table).order_by(circuits_table.c.circuit_id, circuits_table.c.side)
        )
        return [
            MeteredCircuit(
                circuit_id=row.circuit_id,
                tenant_id=row.tenant_id,
                side=row.side,
                router_name=row.router_name,
                interface_name=row.interface_name,
                vlan_id=row.vlan_id,
            )
            for row in rows
        ]

    def get_circuit(
        self, session: Session, circuit_id: str, side: int
    ) -> MeteredCircuit | None:
        row = session.execute(
            select(circuits_table).where(
                circuits_table.c.circuit_id == circuit_id, circuits_table.c.side == side
            )
        ).first()
        if row is None:
            return None
        return MeteredCircuit(
            row.circuit_id,
            row.tenant_id,
            row.side,
            row.router_name,
            row.interface_name,
            row.vlan_id,
        )

    def put_circuit(self, session: Session, circuit: MeteredCircuit, now: datetime) -> None:
        """Insert or replace the circuit's end at ``circuit.side``; an end that moved loses
        its baseline (the new interface's counters have nothing to do with the old one's)."""
        previous = self.get_circuit(session, circuit.circuit_id, circuit.side)
        values = {
            "tenant_id": circuit.tenant_id,
            "router_name": circuit.router_name,
            "interface_name": circuit.interface_name,
            "vlan_id": circuit.vlan_id,
            "updated_at": now,
        }
        if previous is None:
            session.execute(
                circuits_table.insert().values(
                    circuit_id=circuit.circuit_id, side=circuit.side, **values
                )
            )
            return
        session.execute(
            circuits_table.update()
            .where(
                circuits_table.c.circuit_id == circuit.circuit_id,
                circuits_table.c.side == circuit.side,
            )
            .values(**values)
        )
        moved = (previous.router_name, previous.interface_name, previous.vlan_id) != (
            circuit.router_name,
            circuit.interface_name,
            circuit.vlan_id,
        )
        if moved:
            session.execute(
                delete(readings_table).where(
                    readings_table.c.circuit_id == circuit.circuit_id,
                    readings_table.c.router_name == previous.router_name,
                )
            )

    def remove_circuit(self, session: Session, circuit_id: str) -> None:
        """Stop metering every end of the circuit."""
        session.execute(delete(readings_table).where(readings_table.c.circuit_id == circuit_id))
        session.execute(delete(circuits_table).where(circuits_table.c.circuit_id == circuit_id))

    def baseline(self, session: Session, circuit_id: str, router_name: str) -> Reading | None:
        row = session.execute(
            select(readings_table).where(
                readings_table.c.circuit_id == circuit_id,
                readings_table.c.router_name == router_name,
            )
        ).first()
        if row is None:
            return None
        read_at = _aware(row.read_at)
        assert read_at is not None
        return Reading(
            in_octets=int(row.in_octets),
            out_octets=int(row.out_octets),
            read_at=read_at,
            discontinuity_time=_aware(row.discontinuity_time),
        )

    def put_baseline(
        self,
        session: Session,
        circuit_id: str,
        router_name: str,
        interface_name: str,
        reading: Reading,
    ) -> None:
        session.execute(
            delete(readings_table).where(
                readings_table.c.circuit_id == circuit_id,
                readings_table.c.router_name == router_name,
            )
        )
        session.execute(
            readings_table.insert().values(
                circuit_id=circuit_id,
                router_name=router_name,
                interface_name=interface_name,
                in_octets=str(reading.in_octets),
                out_octets=str(reading.out_octets),
                read_at=reading.read_at,
                discontinuity_time=reading.discontinuity_time,
            )
        )
