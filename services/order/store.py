"""Queries of the order database (SQLAlchemy), kept apart from the decisions."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Insert,
    Integer,
    Select,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from services.common.errors import NotFound
from services.common.paging import Key, PageRequest, after, checked, page_of, page_request
from services.common.timestamps import as_utc
from services.order.domain.capacity import Channels, Headroom, VlanPool
from services.order.domain.catalogue import Catalogue, Side
from services.order.domain.lifecycle import (
    COMMITTED_CIRCUIT_STATES,
    ApprovalState,
    CircuitState,
    OrderState,
    OrderType,
)
from services.order.domain.overdue import AwaitingOutcome
from services.order.domain.schedule import Calendar, Reservation, Window
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

# An order's columns, its approvals (by side) and its audit trail (oldest first).
OrderWithHistory = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]
OrderPage = list[OrderWithHistory]


def lock_channel(session: Session) -> None:
    """Serialise admissions: FOR UPDATE on PostgreSQL; SQLite already holds its write lock
    from BEGIN IMMEDIATE (services/common/db.py)."""
    session.execute(
        select(ChannelLock.name).where(ChannelLock.name == CHANNEL_LOCK_ROW).with_for_update()
    ).one()


@dataclass(frozen=True)
class CapacityFigures:
    channels: Channels
    ports: dict[str, Headroom]
    used_vlans: dict[str, int]

    @property
    def channel(self) -> Headroom:
        """The real channel."""
        return self.channels.real


def bandwidth(session: Session, catalogue: Catalogue, channel_capacity_mbps: int
              ) -> tuple[Channels, dict[str, Headroom]]:
    """Committed and reserved bandwidth of the channel, of the sandbox pool and of every
    port, in one statement."""
    totals = session.connection().execute(_bandwidth_statement())
    by_port: dict[tuple[str, str], int] = defaultdict(int)
    pools: dict[tuple[bool, str], int] = defaultdict(int)
    for kind, end, port_id, total in totals:
        by_port[kind, port_id] += int(total or 0)
        if end == "a":  # every circuit and order has one A end: its pool counts it once
            pools[catalogue.is_sandbox_port(port_id), kind] += int(total or 0)
    ports = {
        port.id: Headroom(f"port {port.id}", port.speed_mbps, by_port["c", port.id],
                          by_port["r", port.id])
        for port in catalogue.ports.values()
    }
    return Channels(
        Headroom("the channel", channel_capacity_mbps, pools[False, "c"], pools[False, "r"]),
        Headroom("the sandbox pool", catalogue.sandbox_capacity_mbps, pools[True, "c"],
                 pools[True, "r"]),
    ), ports


@functools.cache
def _bandwidth_statement() -> Select[Any]:
    committed = CircuitRow.state.in_([s.value for s in COMMITTED_CIRCUIT_STATES])
    holding = OrderRow.reserved_mbps > 0
    parts = union_all(*(
        select(literal_column(f"'{kind}'").label("kind"), literal_column(f"'{end}'").label("end"),
               port.label("port"), mbps.label("mbps")).where(where)
        for kind, mbps, where, ends in (
            ("c", CircuitRow.bandwidth_mbps, committed,
             (("a", CircuitRow.a_port_id), ("z", CircuitRow.z_port_id))),
            ("r", OrderRow.reserved_mbps, holding,
             (("a", OrderRow.a_port_id), ("z", OrderRow.z_port_id))))
        for end, port in ends
    )).subquery()
    return (select(parts.c.kind, parts.c.end, parts.c.port, func.sum(parts.c.mbps))
            .group_by(parts.c.kind, parts.c.end, parts.c.port))


def reservations(session: Session, catalogue: Catalogue, moment: datetime, sandbox: bool
                 ) -> list[tuple[str, str, Reservation]]:
    """(A port, Z port, reservation) of every open order holding bandwidth in the real
    channel, or in the sandbox pool when ``sandbox``. A boost still open at ``moment`` past
    its end (late with provisioning) holds on for good: once in force it stays until its
    revert completes."""
    rows = session.execute(
        select(OrderRow.a_port_id, OrderRow.z_port_id, OrderRow.reserved_mbps,
               OrderRow.start_at, OrderRow.end_at).where(OrderRow.reserved_mbps > 0))
    return [(a, z, Reservation(int(mbps), Window(
                start, end if end is None or as_utc(end) > moment else None)))
            for a, z, mbps, start, end in rows if catalogue.is_sandbox_port(a) == sandbox]


def headroom_over(session: Session, catalogue: Catalogue, channel_capacity_mbps: int,
                  port_ids: Sequence[str], start: datetime, end: datetime | None,
                  moment: datetime) -> list[Headroom]:
    """The headroom over [start, end) as of ``moment`` of the channel (the sandbox pool for
    sandbox ports) and of ``port_ids``: the committed bandwidth and the peak of the
    reservations in the window."""
    sandbox = catalogue.is_sandbox_port(port_ids[0])
    channels, ports = bandwidth(session, catalogue, channel_capacity_mbps)
    held = reservations(session, catalogue, moment, sandbox)
    return peak_headroom(channels.of(sandbox), ports, Calendar(start, held), port_ids, end)


def peak_headroom(channel: Headroom, ports: Mapping[str, Headroom], calendar: Calendar,
                  port_ids: Sequence[str], end: datetime | None) -> list[Headroom]:
    """``channel`` and ``port_ids`` with the peak of ``calendar`` over [its start, end) as
    their reserved bandwidth."""
    return [calendar.at_peak(channel, None, end),
            *(calendar.at_peak(ports[port_id], port_id, end) for port_id in port_ids)]


def scheduled_due(session: Session, moment: datetime, limit: int) -> list[OrderRow]:
    """SCHEDULED orders whose start came by ``moment``, soonest first, locked; those another
    process has locked are left to it."""
    return list(session.scalars(
        select(OrderRow)
        .where(OrderRow.state == OrderState.SCHEDULED.value, OrderRow.start_at <= moment)
        .order_by(OrderRow.start_at, OrderRow.id).limit(limit)
        .with_for_update(skip_locked=True)))


def capacity(session: Session, catalogue: Catalogue, channel_capacity_mbps: int
             ) -> CapacityFigures:
    channels, ports = bandwidth(session, catalogue, channel_capacity_mbps)
    vlans = {
        port_id: int(count)
        for port_id, count in session.execute(
            select(PortVlanRow.port_id, func.count()).group_by(PortVlanRow.port_id)
        )
    }
    return CapacityFigures(channels, ports, vlans)


def vlan_pools(session: Session, catalogue: Catalogue, port_ids: Iterable[str]
               ) -> dict[str, VlanPool]:
    """The VLANs in use on each port. A port whose used VLANs form one run without gaps (the
    usual case: the lowest free one is given out) is read as its count and bounds only."""
    wanted = sorted(set(port_ids))
    used: dict[str, set[int]] = {port_id: set() for port_id in wanted}
    summary = session.execute(
        select(PortVlanRow.port_id, func.count(), func.min(PortVlanRow.vlan_id),
               func.max(PortVlanRow.vlan_id))
        .where(PortVlanRow.port_id.in_(wanted)).group_by(PortVlanRow.port_id))
    for port_id, count, lowest, highest in summary:
        if count == highest - lowest + 1:
            used[port_id] = set(range(lowest, highest + 1))
        else:
            used[port_id] = used_vlans(session, port_id)
    return {
        port_id: VlanPool(port_id, catalogue.ports[port_id].vlan_first,
                          catalogue.ports[port_id].vlan_last, vlans)
        for port_id, vlans in used.items()
    }


def existing_orders(session: Session, keys: Iterable[tuple[str, str]]
                    ) -> dict[tuple[str, str], tuple[str, str]]:
    """(tenant, request id) -> (order id, request hash) of the orders already placed."""
    keys = set(keys)
    rows = session.execute(
        select(OrderRow.tenant_id, OrderRow.request_id, OrderRow.id, OrderRow.request_hash)
        .where(OrderRow.request_id.in_(sorted({request_id for _, request_id in keys}))))
    return {(tenant, request_id): (order_id, request_hash)
            for tenant, request_id, order_id, request_hash in rows
            if (tenant, request_id) in keys}


def insert_rows(session: Session, rows: Mapping[type[Any], Sequence[Mapping[str, Any]]]
                ) -> None:
    """Plain (Core) INSERTs of mapped classes' rows, one statement per table with all its
    rows, in the mapping's order."""
    connection = session.connection()
    for mapped, values in rows.items():
        if values:
            connection.execute(_insert_statement(mapped.__table__), list(values))


@functools.cache
def _insert_statement(table: Any) -> Insert:
    return insert(table)


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


def _history_columns() -> list[Any]:
    """The approval and audit columns joined to an order (their order id is the order's)."""
    return [*(ApprovalRow.__table__.c[key] for key in _APPROVAL_KEYS),
            *(AuditRow.__table__.c[key] for key in _AUDIT_KEYS)]


def _order_with_history_statement(scoped: bool) -> Select[Any]:
    orders, approvals, audit = OrderRow.__table__, ApprovalRow.__table__, AuditRow.__table__
    query = (
        select(*orders.c, *_history_columns())
        .outerjoin(approvals, approvals.c.order_id == orders.c.id)
        .outerjoin(audit, audit.c.order_id == orders.c.id)
        .where(orders.c.id == bindparam("order_id"))
        .order_by(approvals.c.side, audit.c.id)
    )
    if scoped:
        query = query.where(orders.c.tenant_id == bindparam("tenant"))
    return query


_ORDER_KEYS = tuple(c.key for c in OrderRow.__table__.columns)
_APPROVAL_KEYS = tuple(c.key for c in ApprovalRow.__table__.columns if c.key != "order_id")
_AUDIT_KEYS = tuple(c.key for c in AuditRow.__table__.columns if c.key != "order_id")
# Built once: a statement object reused keeps its cache key, which SQLAlchemy would
# otherwise compute again on every call.
_ORDER_WITH_HISTORY = {scoped: _order_with_history_statement(scoped) for scoped in (False, True)}
_APPROVAL_AT = len(_ORDER_KEYS)
_AUDIT_AT = _APPROVAL_AT + len(_APPROVAL_KEYS)
_APPROVAL_SIDE = _APPROVAL_AT + _APPROVAL_KEYS.index("side")
_AUDIT_ID = _AUDIT_AT + _AUDIT_KEYS.index("id")
_ORDER_ID = _ORDER_KEYS.index("id")


def order_with_history(session: Session, order_id: str, tenant: str | None
                       ) -> OrderWithHistory:
    """The order's columns, its approvals (by side) and audit trail (oldest first) in one
    statement, so that one snapshot answers even without a transaction. NotFound when
    missing or another tenant's (no leak)."""
    rows = session.connection().execute(
        _ORDER_WITH_HISTORY[tenant is not None], {"order_id": order_id, "tenant": tenant}
    ).all()
    if not rows:
        raise NotFound(f"order {order_id!r} not found")
    return _with_history(rows)[0]


@functools.cache
def _newest_with_history_statement(tenant: bool, states: bool, order_type: bool,
                                   circuit: bool, paged: bool) -> Select[Any]:
    """The statement of one page of orders, newest first, with each order's approvals and
    audit trail; its filters (those present) and page bounds are parameters. Built once per
    combination of filters: building the page subquery and its cache key again on every
    call cost more than the database's work."""
    orders, approvals, audit = OrderRow.__table__, ApprovalRow.__table__, AuditRow.__table__
    query = select(*orders.c)
    if tenant:
        query = query.where(orders.c.tenant_id == bindparam("tenant"))
    if states:
        query = query.where(orders.c.state.in_(bindparam("states", expanding=True)))
    if order_type:
        query = query.where(orders.c.type == bindparam("order_type"))
    if circuit:
        query = query.where(orders.c.circuit_id == bindparam("circuit_id"))
    if paged:
        query = query.where(after((orders.c.created_at, orders.c.id),
                                  (bindparam("after_at"), bindparam("after_id")),
                                  descending=True, check=False))
    selected = (query.order_by(orders.c.created_at.desc(), orders.c.id.desc())
                .limit(bindparam("limit", type_=Integer)).subquery("page"))
    return (
        select(*selected.c, *_history_columns())
        .outerjoin(approvals, approvals.c.order_id == selected.c.id)
        .outerjoin(audit, audit.c.order_id == selected.c.id)
        .order_by(selected.c.created_at.desc(), selected.c.id.desc(), approvals.c.side,
                  audit.c.id)
    )


def _with_history(rows: Sequence[Any]) -> OrderPage:
    """Rows of orders joined with approvals and audit entries, grouped per order in the
    order the orders first appear; approvals sorted by side, audit entries by id."""
    grouped: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]],
                             dict[int, dict[str, Any]]]] = {}
    for row in rows:
        order_id = row[_ORDER_ID]
        if order_id not in grouped:
            grouped[order_id] = (dict(zip(_ORDER_KEYS, row[:_APPROVAL_AT], strict=True)), {}, {})
        _, by_side, by_id = grouped[order_id]
        side, audit_id = row[_APPROVAL_SIDE], row[_AUDIT_ID]
        if side is not None and side not in by_side:
            by_side[side] = dict(zip(_APPROVAL_KEYS, row[_APPROVAL_AT:_AUDIT_AT], strict=True))
        if audit_id is not None and audit_id not in by_id:
            by_id[audit_id] = dict(zip(_AUDIT_KEYS, row[_AUDIT_AT:], strict=True))
    return [(order, [by_side[side] for side in sorted(by_side)],
             [by_id[audit_id] for audit_id in sorted(by_id)])
            for order, by_side, by_id in grouped.values()]


def list_orders(session: Session, page: PageRequest, *, tenant: str | None,
                states: Sequence[OrderState], order_type: OrderType | None, circuit_id: str
                ) -> tuple[OrderPage, str]:
    """ListOrders: one page of the orders that match every filter given (an empty one
    matches all), newest first, with their approvals and audit trails; and the next page's
    token. In one statement."""
    params: dict[str, Any] = {"limit": page.limit + 1}
    if tenant is not None:
        params["tenant"] = tenant
    if states:
        params["states"] = [s.value for s in states]
    if order_type is not None:
        params["order_type"] = order_type.value
    if circuit_id:
        params["circuit_id"] = circuit_id
    if page.after is not None:
        params["after_at"], params["after_id"] = checked(page.after, datetime, str)
    statement = _newest_with_history_statement(
        tenant is not None, bool(states), order_type is not None, bool(circuit_id),
        page.after is not None)
    rows = session.connection().execute(statement, params).all()
    return page_of(_with_history(rows), page,
                   lambda order: (order[0]["created_at"], order[0]["id"]))


def list_circuits(session: Session, page: PageRequest, *, tenant: str | None,
                  states: Sequence[CircuitState], port_id: str
                  ) -> tuple[list[CircuitRow], str]:
    """ListCircuits: one page of the circuits that match every filter given (``port_id``
    at either end), newest first; and the next page's token."""
    key = (CircuitRow.created_at, CircuitRow.id)
    query = select(CircuitRow).order_by(*(column.desc() for column in key))
    if page.after is not None:
        query = query.where(after(key, page.after, descending=True))
    if tenant is not None:
        query = query.where(CircuitRow.tenant_id == tenant)
    if states:
        query = query.where(CircuitRow.state.in_([s.value for s in states]))
    if port_id:
        query = query.where((CircuitRow.a_port_id == port_id) | (CircuitRow.z_port_id == port_id))
    return fetch_page(session, query, page, lambda row: (row.created_at, row.id))


def awaiting_approval(session: Session, side: Side, page: PageRequest
                      ) -> tuple[list[OrderRow], str]:
    """ListPendingApprovals: one page of the orders awaiting the decision of ``side``'s
    telco, oldest first; and the next page's token."""
    awaiting = [s.value for s in ApprovalState if s.awaiting_decision]
    query = (
        select(OrderRow).join(ApprovalRow, ApprovalRow.order_id == OrderRow.id)
        .where(OrderRow.state == OrderState.PENDING_APPROVAL.value,
               ApprovalRow.side == side.value, ApprovalRow.state.in_(awaiting))
        .order_by(OrderRow.created_at, OrderRow.id))
    if page.after is not None:
        query = query.where(after((OrderRow.created_at, OrderRow.id), page.after,
                                  descending=False))
    return fetch_page(session, query, page, lambda row: (row.created_at, row.id))


def approval_window_passed(session: Session, moment: datetime, limit: int) -> list[OrderRow]:
    """Orders awaiting approval whose window closed by ``moment``, soonest closed first,
    locked; those another process has locked are left to it."""
    return list(session.scalars(
        select(OrderRow)
        .where(OrderRow.state == OrderState.PENDING_APPROVAL.value,
               OrderRow.approval_expire_at <= moment)
        .order_by(OrderRow.approval_expire_at).limit(limit)
        .with_for_update(skip_locked=True)))


def approvals(session: Session, order_id: str) -> list[ApprovalRow]:
    return list(session.scalars(
        select(ApprovalRow).where(ApprovalRow.order_id == order_id).order_by(ApprovalRow.side)
    ))


def plans(session: Session, order_id: str) -> dict[str, PlanRow]:
    return {p.side: p for p in session.scalars(select(PlanRow).where(PlanRow.order_id == order_id))}


def page(page_size: int, page_token: str) -> PageRequest:
    """A List request's page: page_size 0 is the default (50), at most 1000."""
    return page_request(page_size, page_token, default=DEFAULT_PAGE_SIZE,
                        maximum=MAX_PAGE_SIZE)


def fetch_page(session: Session, query: Select[Any], page: PageRequest,
               key_of: Callable[[T], Key]) -> tuple[list[T], str]:
    """One page of ``query`` (already after the token's key) and the next page's token
    (one extra row is read to know whether there is one)."""
    rows: list[T] = list(session.scalars(query.limit(page.limit + 1)))
    return page_of(rows, page, key_of)


WITH_PROVISIONING = (OrderState.APPROVED.value, OrderState.IN_PROGRESS.value)


def approved_before(session: Session, since: datetime, limit: int
                    ) -> tuple[list[AwaitingOutcome], bool]:
    """Orders with provisioning (APPROVED or IN_PROGRESS) approved before ``since``, and
    SCHEDULED orders (and reverts back in approval) due to start before it, oldest first,
    at most ``limit``; and whether there are more."""
    due = func.coalesce(OrderRow.approved_at, OrderRow.start_at)
    rows = session.execute(
        select(OrderRow.id, OrderRow.state, due, OrderRow.provisioning_step,
               OrderRow.provisioning_step_at)
        .where(((OrderRow.state.in_(WITH_PROVISIONING)) & (OrderRow.approved_at <= since))
               | ((OrderRow.state == OrderState.SCHEDULED.value)
                  & (OrderRow.start_at <= since))
               | ((OrderRow.state == OrderState.PENDING_APPROVAL.value)
                  & OrderRow.boost_order_id.is_not(None) & (OrderRow.start_at <= since)))
        .order_by(due, OrderRow.id).limit(limit + 1)
    ).all()
    found = [AwaitingOutcome(order_id, OrderState(state), as_utc(since_at), step, step_at)
             for order_id, state, since_at, step, step_at in rows
             if since_at is not None]  # never NULL here: the WHERE compares it
    return found[:limit], len(found) > limit
