"""The provisioning service's own tables (migrations 0002 to 0009)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.audit_chain import chain_tables
from services.common.db import new_metadata

_Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ProvisioningBase(DeclarativeBase):
    metadata = new_metadata()


class AgentCommand(ProvisioningBase):
    """A command an agent received, queued for its router's worker (FIFO by id)."""

    __tablename__ = "agent_commands"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    router_name: Mapped[str] = mapped_column(String(64), index=True)
    circuit_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[int] = mapped_column(Integer)
    command: Mapped[bytes] = mapped_column(LargeBinary)
    traceparent: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AgentBatch(ProvisioningBase):
    """One confirmed commit on one router, holding one or more circuits.

    ``members`` maps circuit id to its state in the batch (see domain.batch.Member).
    """

    __tablename__ = "agent_batches"

    persist_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    router_name: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    expire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    members: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RouterLease(ProvisioningBase):
    """Which agent worker drives a router (see lease.py); expiry on the database's clock."""

    __tablename__ = "router_leases"

    router_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SagaRow(ProvisioningBase):
    """The coordinator's state of one saga (see saga.Saga)."""

    __tablename__ = "sagas"

    saga_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    circuit_id: Mapped[str] = mapped_column(String(64), index=True)
    order_id: Mapped[str] = mapped_column(String(64), default="")
    operation: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    approved: Mapped[bytes] = mapped_column(LargeBinary)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Since when the saga is in ``step`` (the step-latency metric); migration 0005.
    step_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IntendedCircuit(ProvisioningBase):
    """What the system intends a circuit to be on the routers (after its last saga)."""

    __tablename__ = "intended_circuits"

    circuit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    parameters: Mapped[bytes] = mapped_column(LargeBinary)
    price: Mapped[bytes] = mapped_column(LargeBinary)
    tenant_id: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PlannedOrder(ProvisioningBase):
    """An order's plan (published as ProvisioningPlanned), for DryRun by order id."""

    __tablename__ = "planned_orders"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    circuit_id: Mapped[str] = mapped_column(String(64))
    operation: Mapped[int] = mapped_column(Integer)
    created: Mapped[bytes] = mapped_column(LargeBinary)


class LogEntry(ProvisioningBase):
    """One step of a saga on one router."""

    __tablename__ = "provisioning_log"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    saga_id: Mapped[str] = mapped_column(String(36), default="")
    order_id: Mapped[str] = mapped_column(String(64), default="")
    circuit_id: Mapped[str] = mapped_column(String(64), index=True)
    operation: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    router_name: Mapped[str] = mapped_column(String(64))
    side: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    persist_id: Mapped[str] = mapped_column(String(64), default="")
    payload_sha256: Mapped[str] = mapped_column(String(64), default="")
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    error: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    message: Mapped[str] = mapped_column(Text, default="")
    # Principal id(s) that caused the entry (see ProvisioningLogEntry.actor).
    actor: Mapped[str] = mapped_column(String(256), default="")


class CircuitSync(ProvisioningBase):
    """The drift watch's view of one circuit end (see domain.drift.EndRecord)."""

    __tablename__ = "circuit_sync"

    circuit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    router_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    side: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_in_sync_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    reported: Mapped[str] = mapped_column(String(16), default="")
    reported_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


class RepairPlan(ProvisioningBase):
    """A requested repair (redeploy) of a circuit; runs once every router's payload is
    approved (see repairs.py). ``state`` is the plan's lifecycle; every decision on it is
    a RepairDecisionRow of its own."""

    __tablename__ = "repair_plans"

    repair_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    circuit_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(24), index=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    requester_telco: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    saga_id: Mapped[str] = mapped_column(String(36), default="")


class RepairPayload(ProvisioningBase):
    """One router's payload of a repair plan, as rendered when it was requested."""

    __tablename__ = "repair_payloads"

    repair_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    side: Mapped[int] = mapped_column(Integer, primary_key=True)
    telco_id: Mapped[str] = mapped_column(String(16))
    router_name: Mapped[str] = mapped_column(String(64))
    operation: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class RepairDecisionRow(ProvisioningBase):
    """One decision on a repair (requested, approved, rejected, superseded, started):
    append-only, never updated."""

    __tablename__ = "repair_decisions"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    repair_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    side: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str] = mapped_column(String(128))
    payload_sha256: Mapped[str] = mapped_column(String(64), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# The audit chain's links and heads (services/common/audit_chain.py; migration 0009).
AUDIT_CHAIN, AUDIT_CHAIN_HEADS = chain_tables(ProvisioningBase.metadata)
