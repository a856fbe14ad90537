"""The order service's tables (SQLAlchemy), shared by the repositories.

Migration 0002 creates the same shapes; ``tests/unit/order`` checks that they agree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.audit_chain import chain_tables
from services.common.db import UtcDateTime, new_metadata

# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL wants a BIGINT.
AutoId = BigInteger().with_variant(Integer(), "sqlite")
CHANNEL_LOCK_ROW = "channel"


class OrderBase(DeclarativeBase):
    metadata = new_metadata()


class ChannelLock(OrderBase):
    """One row; admissions lock it (SELECT ... FOR UPDATE) so they happen one at a time."""

    __tablename__ = "channel_lock"
    name: Mapped[str] = mapped_column(String(16), primary_key=True)


class QuoteRow(OrderBase):
    __tablename__ = "quotes"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    spec: Mapped[bytes] = mapped_column(LargeBinary)
    currency: Mapped[str] = mapped_column(String(3))
    mrc: Mapped[str] = mapped_column(String(32))
    nrc: Mapped[str] = mapped_column(String(32))
    burst_price: Mapped[str] = mapped_column(String(32))
    term_months: Mapped[int] = mapped_column(Integer)
    price_book_version: Mapped[str] = mapped_column(String(32))
    termination_share: Mapped[str] = mapped_column(String(32), default="0", server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expire_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CircuitRow(OrderBase):
    __tablename__ = "circuits"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    a_port_id: Mapped[str] = mapped_column(String(128))
    z_port_id: Mapped[str] = mapped_column(String(128))
    a_vlan: Mapped[int] = mapped_column(Integer)
    z_vlan: Mapped[int] = mapped_column(Integer)
    bandwidth_mbps: Mapped[int] = mapped_column(BigInteger)
    burst_mbps: Mapped[int] = mapped_column(BigInteger)
    term_months: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    mrc: Mapped[str] = mapped_column(String(32))
    nrc: Mapped[str] = mapped_column(String(32))
    burst_price: Mapped[str] = mapped_column(String(32))
    price_book_version: Mapped[str] = mapped_column(String(32))
    # Migration 0012: the price book's share of the MRC owed on an early disconnect.
    termination_share: Mapped[str] = mapped_column(String(32), default="0", server_default="0")
    customer_reference: Mapped[str] = mapped_column(String(256))
    # The customer's purchase-order number (validated; travels to billing; migration 0011).
    purchase_order: Mapped[str] = mapped_column(String(35), default="", server_default="")
    description: Mapped[str] = mapped_column(String(256))
    created_by_order_id: Mapped[str] = mapped_column(String(40))
    pending_order_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    disconnected_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The routers' drift summed up (domain.health; migration 0006): "" in sync.
    health: Mapped[str] = mapped_column(String(16), default="", server_default="")
    health_since: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OrderRow(OrderBase):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("tenant_id", "request_id", name="uq_orders_tenant_request"),
        Index("ix_orders_state", "state"),
        # ListOrders, newest first (migration 0003)
        Index("ix_orders_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_orders_created", "created_at", "id"),
        Index("ix_orders_reserving", "a_port_id", "z_port_id",
              postgresql_where=text("reserved_mbps > 0"), sqlite_where=text("reserved_mbps > 0")),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(20))
    circuit_id: Mapped[str] = mapped_column(String(40), index=True)
    request_id: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    quote_id: Mapped[str | None] = mapped_column(String(40))
    requested_by: Mapped[str] = mapped_column(String(128))
    a_port_id: Mapped[str] = mapped_column(String(128))
    z_port_id: Mapped[str] = mapped_column(String(128))
    a_vlan: Mapped[int] = mapped_column(Integer)
    z_vlan: Mapped[int] = mapped_column(Integer)
    bandwidth_mbps: Mapped[int] = mapped_column(BigInteger)
    burst_mbps: Mapped[int] = mapped_column(BigInteger)
    previous_bandwidth_mbps: Mapped[int] = mapped_column(BigInteger)
    term_months: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    mrc: Mapped[str] = mapped_column(String(32))
    nrc: Mapped[str] = mapped_column(String(32))
    burst_price: Mapped[str] = mapped_column(String(32))
    price_book_version: Mapped[str] = mapped_column(String(32))
    termination_share: Mapped[str] = mapped_column(String(32), default="0", server_default="0")
    customer_reference: Mapped[str] = mapped_column(String(256))
    # The customer's purchase-order number (validated; travels to billing; migration 0011).
    purchase_order: Mapped[str] = mapped_column(String(35), default="", server_default="")
    description: Mapped[str] = mapped_column(String(256))
    # Bandwidth this order holds on the channel and its ports; 0 once the order ended.
    reserved_mbps: Mapped[int] = mapped_column(BigInteger)
    # The contacts, AES-GCM sealed (services/order/contacts.py; migration 0007): the key
    # they were sealed with and the nonce beside the ciphertext.
    contacts_key_id: Mapped[str] = mapped_column(String(32))
    contacts_nonce: Mapped[bytes] = mapped_column(LargeBinary)
    contacts_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    failure: Mapped[bytes | None] = mapped_column(LargeBinary)
    plan_error: Mapped[str | None] = mapped_column(Text)
    approval_expire_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When both telcos last approved it (handed to provisioning); None while not approved.
    # The overdue alarm counts from here (migration 0004).
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The last step provisioning reported for the order, and when it entered it.
    provisioning_step: Mapped[str | None] = mapped_column(String(64))
    provisioning_step_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Bumped on every change; WatchOrder compares it.
    version: Mapped[int] = mapped_column(Integer)
    # The window of a scheduled change (migration 0014): it takes effect at start_at (None:
    # once approved) and, for a boost, reverts at end_at. Its reservation holds over
    # [start_at, end_at) (open ends: from now, for good).
    start_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # A boost names its revert, the revert its boost.
    revert_order_id: Mapped[str | None] = mapped_column(String(40))
    boost_order_id: Mapped[str | None] = mapped_column(String(40))
    # The price book's boost price per Mbps-hour a boost (and its revert) was sold at.
    boost_price: Mapped[str | None] = mapped_column(String(32))


class ApprovalRow(OrderBase):
    __tablename__ = "approvals"
    order_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    side: Mapped[str] = mapped_column(String(16), primary_key=True)
    telco_id: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    approver: Mapped[str] = mapped_column(String(128))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # On a boost: the revert's payload hash approved with it (migration 0014).
    revert_payload_sha256: Mapped[str] = mapped_column(String(64), default="",
                                                       server_default="")


class ApprovalDecisionRow(OrderBase):
    """Every decision on one side's approval (approved, rejected, superseded, expired,
    reopened), append-only (migration 0008): never updated. ``approvals`` holds each
    side's current decision, written only together with the entry it follows (see
    approval_log.decide)."""

    __tablename__ = "approval_decisions"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(40), index=True)
    side: Mapped[str] = mapped_column(String(16))
    telco_id: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    # Principal id (Principal.ref) of who decided, or "system:<component>".
    approver: Mapped[str] = mapped_column(String(128))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PlanRow(OrderBase):
    """The current router payload of one side of an order (from ProvisioningPlanned)."""

    __tablename__ = "plans"
    order_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    side: Mapped[str] = mapped_column(String(16), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditRow(OrderBase):
    __tablename__ = "order_audit"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))


class PortVlanRow(OrderBase):
    """A VLAN held on a port; the primary key makes a VLAN unique per port."""

    __tablename__ = "port_vlans"
    port_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    vlan_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    circuit_id: Mapped[str] = mapped_column(String(40), index=True)


class CircuitDriftRow(OrderBase):
    """A drift provisioning reported on one side of a circuit, until it is cleared
    (migration 0006); the circuit's ``health`` columns sum them up."""

    __tablename__ = "circuit_drift"
    circuit_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    side: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UtcDateTime)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime)


# The audit chain's links and heads (services/common/audit_chain.py; migration 0009).
AUDIT_CHAIN, AUDIT_CHAIN_HEADS = chain_tables(OrderBase.metadata)
