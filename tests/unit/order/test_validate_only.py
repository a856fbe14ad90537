"""Validate-only orders and the price preview of a change, on the SQLite unit of work: the
real call's checks and answer, and nothing kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common.auth import Principal, Role
from services.common.errors import AlreadyExists, CapacityExhausted, DomainError, NotFound
from services.common.events.tables import OutboxRow
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.catalogue import load_catalogue
from services.order.domain.pricing import load_price_book
from services.order.orders import OrderApp
from services.order.settings import OrderSettings
from services.order.tables import AuditRow, CircuitRow, OrderRow, PortVlanRow
from tests.unit.order.fakes import SqliteUnitOfWork
from tests.unit.order.test_new_order import active_circuit

CATALOGUE = load_catalogue()
ALICE = Principal("alice@acme", Role.CUSTOMER, tenant="acme")
BOB = Principal("bob@globex", Role.CUSTOMER, tenant="globex")
ACTIVATED = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)


@pytest.fixture
def uow(tmp_path: Path) -> Iterator[SqliteUnitOfWork]:
    unit = SqliteUnitOfWork(tmp_path)
    yield unit
    unit.close()


@pytest.fixture
def clock() -> list[datetime]:
    return [ACTIVATED]


@pytest.fixture
def app(uow: SqliteUnitOfWork, clock: list[datetime]) -> OrderApp:
    return OrderApp(uow, CATALOGUE, load_price_book(),
                    OrderSettings(channel_capacity_mbps=1000), clock=lambda: clock[0],
                    contacts=ContactVault(ContactCipher(ContactKeySet.generate()),
                                          billing_telcos(CATALOGUE)))


def counts(uow: SqliteUnitOfWork) -> dict[str, int]:
    with uow.read() as session:
        return {table.__name__: session.scalar(select(func.count()).select_from(table)) or 0
                for table in (OrderRow, CircuitRow, PortVlanRow, AuditRow, OutboxRow)}


def new(bandwidth: int = 100, request_id: str = "r-1", **fields: Any
        ) -> order_service_pb2.CreateOrderRequest:
    return order_service_pb2.CreateOrderRequest(
        request_id=request_id, spec=circuit_pb2.CircuitSpec(
            a_end_port_id="sg-edge-1:xe-0/0/1", z_end_port_id="cq-edge-1:XGE0/0/1",
            bandwidth_mbps=bandwidth, term_months=12, currency_code="SGD"), **fields)


def refusal(call: Any) -> tuple[type[DomainError], str]:
    with pytest.raises(DomainError) as caught:
        call()
    return type(caught.value), str(caught.value)


def test_a_validate_only_order_is_the_real_one_without_ids_and_keeps_nothing(
    app: OrderApp, uow: SqliteUnitOfWork,
) -> None:
    before, told = counts(uow), uow.counting.notified
    trial = app.placing.create_order(ALICE, new(validate_only=True))
    assert counts(uow) == before and uow.counting.notified == told
    assert (trial.id, trial.circuit_id, trial.state) == (
        "", "", order_pb2.ORDER_STATE_PENDING_APPROVAL)
    real = app.placing.create_order(ALICE, new())  # the request id was not consumed
    assert real.id and real.price == trial.price
    assert (real.spec.a_end_vlan_id, real.spec.z_end_vlan_id) == (
        trial.spec.a_end_vlan_id, trial.spec.z_end_vlan_id)
    # The request id is used now: validate-only answers as the real call would.
    assert app.placing.create_order(ALICE, new(validate_only=True)).id == real.id
    assert refusal(lambda: app.placing.create_order(ALICE, new(200, validate_only=True)))[0] \
        is AlreadyExists


def test_validate_only_is_refused_as_the_real_call_is(app: OrderApp) -> None:
    for request in (new(2000), new(100, request_id=""), new(15)):
        trial = order_service_pb2.CreateOrderRequest()
        trial.CopyFrom(request)
        trial.validate_only = True
        assert refusal(lambda r=trial: app.placing.create_order(ALICE, r)) \
            == refusal(lambda r=request: app.placing.create_order(ALICE, r))
    assert refusal(lambda: app.placing.create_order(ALICE, new(2000)))[0] is CapacityExhausted


def test_validate_only_changes_and_disconnects_keep_nothing(
    app: OrderApp, uow: SqliteUnitOfWork,
) -> None:
    circuit_id = active_circuit(app).circuit_id
    before = counts(uow)
    change = app.changing.modify_bandwidth(ALICE, order_service_pb2.ModifyBandwidthRequest(
        request_id="r-c", circuit_id=circuit_id, bandwidth_mbps=200, reason="growth",
        validate_only=True))
    gone = app.changing.disconnect(ALICE, order_service_pb2.DisconnectCircuitRequest(
        request_id="r-d", circuit_id=circuit_id, validate_only=True))
    assert counts(uow) == before
    assert (change.id, change.type, change.circuit_id, change.spec.bandwidth_mbps) == (
        "", order_pb2.ORDER_TYPE_CHANGE, circuit_id, 200)
    assert (gone.id, gone.type) == ("", order_pb2.ORDER_TYPE_DISCONNECT)
    with uow.read() as session:
        assert session.get(CircuitRow, circuit_id).pending_order_id is None  # type: ignore[union-attr]
    real = app.changing.modify_bandwidth(ALICE, order_service_pb2.ModifyBandwidthRequest(
        request_id="r-c", circuit_id=circuit_id, bandwidth_mbps=200, reason="growth"))
    assert real.price == change.price
    assert refusal(lambda: app.changing.modify_bandwidth(
        BOB, order_service_pb2.ModifyBandwidthRequest(
            request_id="r-x", circuit_id=circuit_id, bandwidth_mbps=200,
            validate_only=True)))[0] is NotFound


def test_a_preview_prices_a_change_and_a_disconnect_before_the_term_end(
    app: OrderApp, clock: list[datetime],
) -> None:
    circuit_id = active_circuit(app).circuit_id  # activated 31 January 2026, 12 months
    clock[0] = ACTIVATED + timedelta(days=135)  # 15 June 2026
    utc = app.changing.preview(ALICE, circuit_id, None, None, UTC)
    assert (utc.figures.remaining_term_months, utc.figures.term_end.isoformat()) == (
        7, "2027-01-31")
    mrc = utc.circuit.mrc
    assert (mrc, utc.figures.termination_fee) == ("2180.25", Decimal("7630.88"))  # 7 x 0.50
    change = app.changing.preview(ALICE, circuit_id, 200, None, UTC)
    assert change.figures.termination_fee == 0
    assert change.money_after["mrc"] != mrc
    assert (change.figures.proration.current_days, change.figures.proration.new_days) == (14, 16)
    assert refusal(lambda: app.changing.preview(BOB, circuit_id, None, None, UTC))[0] \
        is NotFound
    assert refusal(lambda: app.changing.preview(ALICE, circuit_id, 100, None, UTC)) == refusal(
        lambda: app.changing.modify_bandwidth(ALICE, order_service_pb2.ModifyBandwidthRequest(
            request_id="r-same", circuit_id=circuit_id, bandwidth_mbps=100)))
