"""Queries of the order database (SQLAlchemy), kept apart from the decisions."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from services.common.errors import InvalidArgument, NotFound
from services.order.domain.capacity import Headroom
from services.order.domain.catalogue import Catalogue
from services.order.domain.lifecycle import COMMITTED_CIRCUIT_STATES
from services.order.tables import (
    CHANNEL_LOCK_ROW,
    ApprovalRow,
    AuditRow,
    ChannelLock,
    CircuitRow,
    OrderRow,
    PlanRow,
    PortVlanRow,
)

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def lock_channel(session: Session) -> None:
    """Serialise admissions: FOR UPDATE on PostgreSQL; SQLite already holds its write lock
    from BEGIN IMMEDIATE (services/common/db.py)."""
    session.execute(
        select(ChannelLock.name).where(ChannelLock.name == CHANNEL_LOCK_ROW).with_for_update()
    ).one()


@dataclass(frozen=True)
class CapacityFigures:
    channel: Headroom
    ports: dict[str, Headroom]
    used_vlans: dict[str, int]


def capacity(session: Session, catalogue: Catalogue, channel_capacity_mbps: int
             ) -> CapacityFigures:
    committed_states = [s.value for s in COMMITTED_CIRCUIT_STATES]
    committed_by_port: dict[str, int] = defaultdict(int)
    reserved_by_port: dict[str, int] = defaultdict(int)
    for column in (CircuitRow.a_port_id, CircuitRow.z_port_id):
        rows = session.execute(
            select(column, func.sum(CircuitRow.bandwidth_mbps))
            .where(CircuitRow.state.in_(committed_states)).group_by(column)
        )
        for port_id, total in rows:
            committed_by_port[port_id] += int(total or 0)
    for column in (OrderRow.a_port_id, OrderRow.z_port_id):
        rows = session.execute(
            select(column, func.sum(OrderRow.reserved_mbps))
            .where(OrderRow.reserved_mbps > 0).group_by(column)
        )
        for port_id, total in rows:
            reserved_by_port[port_id] += int(total or 0)
    committed = session.scalar(
        select(func.coalesce(func.sum(CircuitRow.bandwidth_mbps), 0))
        .where(CircuitRow.state.in_(committed_states))
    )
    reserved = session.scalar(select(func.coalesce(func.sum(OrderRow.reserved_mbps), 0)))
    vlans = {
        port_id: int(count)
        for port_id, count in session.execute(
            select(PortVlanRow.port_id, func.count()).group_by(PortVlanRow.port_id)
        )
    }
    ports = {
        port.id: Headroom(
            f"port {port.id}", port.speed_mbps,
            committed_by_port[port.id], reserved_by_port[port.id],
        )
        for port in catalogue.ports.values()
    }
    channel = Headroom("the channel", channel_capacity_mbps, int(committed or 0),
                       int(reserved or 0))
    return CapacityFigures(channel, ports, vlans)


def used_vlans(session: Session, port_id: str) -> set[int]:
    return set(session.scalars(select(PortVlanRow.vlan_id).where(PortVlanRow.port_id == port_id)))


def release_vlans(session: Session, circuit_id: str) -> None:
    session.execute(delete(PortVlanRow).where(PortVlanRow.circuit_id == circuit_id))


def order_by_request(session: Session, tenant: str, request_id: str) -> OrderRow | None:
    return session.scalars(
        select(OrderRow).where(OrderRow.tenant_id == tenant, OrderRow.request_id == request_id)
    ).first()


def get_order(session: Session, order_id: str, tenant: str | None, *,
              for_update: bool = False) -> OrderRow:
    """The order, or NotFound, also when it belongs to another tenant (no leak)."""
    query = select(OrderRow).where(OrderRow.id == order_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).first()
    if row is None or (tenant is not None and row.tenant_id != tenant):
        raise NotFound(f"order {order_id!r} not found")
    return row


def get_circuit(session: Session, circuit_id: str, tenant: str | None, *,
                for_update: bool = False) -> CircuitRow:
    query = select(CircuitRow).where(CircuitRow.id == circuit_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).first()
    if row is None or (tenant is not None and row.tenant_id != tenant):
        raise NotFound(f"circuit {circuit_id!r} not found")
    return row


def approvals(session: Session, order_id: str) -> list[ApprovalRow]:
    return list(session.scalars(
        select(ApprovalRow).where(ApprovalRow.order_id == order_id).order_by(ApprovalRow.side)
    ))


def plans(session: Session, order_id: str) -> dict[str, PlanRow]:
    return {p.side: p for p in session.scalars(select(PlanRow).where(PlanRow.order_id == order_id))}


def audit_trail(session: Session, order_id: str) -> list[AuditRow]:
    return list(session.scalars(
        select(AuditRow).where(AuditRow.order_id == order_id).order_by(AuditRow.id)
    ))


def page_bounds(page_size: int, page_token: str) -> tuple[int, int]:
    """(offset, limit) from a request's page_size and opaque page_token."""
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", "must be zero (the default) or more")
    limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return 0, limit
    try:
        offset = int(base64.urlsafe_b64decode(page_token.encode()).decode().removeprefix("o:"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.for_field(
            "page_token", "is not a token from a previous response") from None
    if offset < 0:
        raise InvalidArgument.for_field("page_token", "is not a token from a previous response")
    return offset, limit


def next_token(offset: int, limit: int, returned: int, has_more: bool) -> str:
    if not has_more:
        return ""
    return base64.urlsafe_b64encode(f"o:{offset + min(returned, limit)}".encode()).decode()


def fetch_page(session: Session, query: Select[T], offset: int, limit: int
               ) -> tuple[Sequence[T], bool]:
    """One page and whether more follow (one extra row is read to know)."""
    rows: list[T] = list(session.scalars(query.offset(offset).limit(limit + 1)))
    return rows[:limit], len(rows) > limit

