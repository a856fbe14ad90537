"""One builder for every new order: a NEW order admitted in a batch and a CHANGE or
DISCONNECT order placed on its circuit come out of it alike, on the SQLite unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import order_pb2 as order_events
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common.auth import Principal, Role
from services.common.events.tables import OutboxRow
from services.common.events.topics import ORDER_EVENTS
from services.order.contacts import ContactCipher, ContactKeySet, SealedContacts
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.catalogue import load_catalogue
from services.order.domain.lifecycle import OrderType
from services.order.domain.pricing import load_price_book
from services.order.new_order import NewOrder, order_records
from services.order.orders import OrderApp
from services.order.settings import OrderSettings
from tests.unit.order.fakes import SqliteUnitOfWork, record_plan

S = order_pb2.OrderState
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
CATALOGUE = load_catalogue()
ALICE = Principal("alice@acme", Role.CUSTOMER, tenant="acme")
OLGA = Principal("olga@sg", Role.OPS, telco="sg")
CHEN = Principal("chen@cq", Role.OPS, telco="cq")


@pytest.fixture
def uow(tmp_path: Path) -> Iterator[SqliteUnitOfWork]:
    unit = SqliteUnitOfWork(tmp_path)
    yield unit
    unit.close()


@pytest.fixture
def app(uow: SqliteUnitOfWork) -> OrderApp:
    return OrderApp(uow, CATALOGUE, load_price_book(), OrderSettings(), clock=lambda: T0,
                    contacts=ContactVault(ContactCipher(ContactKeySet.generate()),
                                          billing_telcos(CATALOGUE)))


def test_a_new_order_waits_for_both_telcos_with_its_first_two_moves_audited() -> None:
    records = order_records(NewOrder(
        order_id="ord-1", order_type=OrderType.DISCONNECT, circuit_id="cct-1",
        requested_by="alice@acme", request_id="r-1", fingerprint="f", quote_id=None,
        shape={"tenant_id": "acme"}, money={"currency": "SGD"}, previous_bandwidth_mbps=100,
        reserved_mbps=0, contacts=SealedContacts(None, None, None), moment=T0,
        approval_expire_at=T0 + timedelta(hours=1)), CATALOGUE)
    assert {key: records.order[key] for key in (
        "state", "version", "type", "tenant_id", "currency", "reserved_mbps",
        "approval_expire_at")} == {
        "state": "PENDING_APPROVAL", "version": 2, "type": "DISCONNECT", "tenant_id": "acme",
        "currency": "SGD", "reserved_mbps": 0, "approval_expire_at": T0 + timedelta(hours=1)}
    assert [(a["side"], a["telco_id"], a["state"]) for a in records.approvals] == [
        ("CHONGQING", "cq", "PENDING"), ("SINGAPORE", "sg", "PENDING")]
    assert [(e["from_state"], e["to_state"], e["reason"]) for e in records.audit] == [
        (None, "ACKNOWLEDGED", "disconnect ordered; capacity and VLANs reserved"),
        ("ACKNOWLEDGED", "PENDING_APPROVAL", "waiting for approval by both telcos")]


def active_circuit(app: OrderApp) -> order_pb2.Order:
    order = app.placing.create_order(ALICE, order_service_pb2.CreateOrderRequest(
        request_id="r-new", spec=circuit_pb2.CircuitSpec(
            a_end_port_id="sg-edge-1:xe-0/0/1", z_end_port_id="cq-edge-1:XGE0/0/1",
            bandwidth_mbps=100, term_months=12, currency_code="SGD")))
    record_plan(app, order.id, order.circuit_id)
    app.approving.approve(OLGA, order.id, "a1", "")
    app.approving.approve(CHEN, order.id, "z1", "")
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitActivated(
            order_id=order.id, circuit_id=order.circuit_id))
    return order


def created_events(uow: SqliteUnitOfWork, circuit_id: str) -> list[order_events.OrderCreated]:
    with uow.read() as session:
        rows = session.scalars(select(OutboxRow).where(
            OutboxRow.topic == ORDER_EVENTS, OutboxRow.key == circuit_id.encode(),
            OutboxRow.event_type == "idc.events.v1.OrderCreated").order_by(OutboxRow.id))
        return [order_events.OrderCreated.FromString(row.payload) for row in rows]


def test_an_order_on_a_circuit_is_built_as_a_new_one_is(
    app: OrderApp, uow: SqliteUnitOfWork,
) -> None:
    new = active_circuit(app)
    told = uow.counting.notified
    change = app.changing.modify_bandwidth(ALICE, order_service_pb2.ModifyBandwidthRequest(
        request_id="r-change", circuit_id=new.circuit_id, bandwidth_mbps=200,
        reason="more traffic"))
    assert uow.counting.notified == told + 1, "watchers are told once the order committed"
    assert (change.state, change.type, change.circuit_id) == (
        S.ORDER_STATE_PENDING_APPROVAL, order_pb2.ORDER_TYPE_CHANGE, new.circuit_id)
    assert [(e.from_state, e.to_state) for e in change.audit_trail] == [
        (S.ORDER_STATE_UNSPECIFIED, S.ORDER_STATE_ACKNOWLEDGED),
        (S.ORDER_STATE_ACKNOWLEDGED, S.ORDER_STATE_PENDING_APPROVAL),
        (S.ORDER_STATE_PENDING_APPROVAL, S.ORDER_STATE_PENDING_APPROVAL)]
    assert change.audit_trail[-1].reason == "customer's reason: more traffic"
    assert [a.telco_id for a in new.approvals] == [a.telco_id for a in change.approvals]
    placed, changed = created_events(uow, new.circuit_id)
    assert (placed.order_id, placed.previous_bandwidth_mbps, placed.circuit.bandwidth_mbps) \
        == (new.id, 0, 100)
    assert (changed.order_id, changed.previous_bandwidth_mbps,
            changed.circuit.bandwidth_mbps) == (change.id, 100, 200)
    assert changed.circuit.a_end == placed.circuit.a_end
    assert changed.circuit.z_end == placed.circuit.z_end
