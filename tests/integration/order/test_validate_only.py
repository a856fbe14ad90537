"""Validate-only orders and price previews against the real order service (SQLite and
PostgreSQL, the real broker): the real call's answer and errors, and nothing kept."""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Callable
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from sqlalchemy import func, select

from idc.order.v1 import order_pb2, order_service_pb2
from services.common import db
from services.common.config import KafkaSettings
from services.common.events.tables import OutboxRow
from services.order.tables import CircuitRow, OrderRow, PortVlanRow
from tests.integration.order.harness import (
    CQ_PORT,
    SG_PORT,
    Client,
    OrderService,
    activated,
    running_order_service,
    spec,
)

pytestmark = pytest.mark.integration
S = order_pb2.OrderState


def stored(database_url: str) -> dict[str, int]:
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            return {table.__name__: connection.scalar(
                select(func.count()).select_from(table)) or 0
                for table in (OrderRow, CircuitRow, PortVlanRow, OutboxRow)}
    finally:
        engine.dispose()


def failure(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, Any]:
    """Code, message and error details (google.rpc.Status, BadRequest) of a refused call."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    return error.code(), error.details(), details


def create(client: Client, bandwidth: int, request_id: str, *, validate_only: bool = False,
           **fields: Any) -> order_pb2.Order:
    order: order_pb2.Order = client.call("CreateOrder", order_service_pb2.CreateOrderRequest(
        request_id=request_id, spec=spec(bandwidth, **fields),
        validate_only=validate_only)).order
    return order


def test_validate_only_keeps_nothing_and_answers_as_the_real_order(
    database_url: str, kafka_settings: KafkaSettings,
) -> None:
    with running_order_service(database_url, kafka_settings,
                               channel_capacity_mbps=1000) as svc:
        before = stored(database_url)
        request_id = uuid.uuid4().hex
        trial = create(svc.alice, 1000, request_id, validate_only=True, a_end_vlan_id=700)
        assert (trial.id, trial.circuit_id, trial.state) == (
            "", "", S.ORDER_STATE_PENDING_APPROVAL)
        assert stored(database_url) == before  # no order, circuit, VLAN or outbox row
        capacity = svc.alice.capacity()
        assert (capacity.channel_reserved_mbps, capacity.channel_free_mbps) == (0, 1000)
        # Nothing was reserved and the request id is free: the real order fits exactly.
        real = create(svc.alice, 1000, request_id, a_end_vlan_id=700)
        assert real.id and real.price == trial.price and real.spec == trial.spec
        assert svc.alice.capacity().channel_free_mbps == 0
        # A used request id answers as the real call does: the order, or ALREADY_EXISTS.
        assert create(svc.alice, 1000, request_id, validate_only=True, a_end_vlan_id=700).id \
            == real.id
        assert failure(lambda: create(svc.alice, 500, request_id, validate_only=True,
                                      a_end_vlan_id=700))[0] == grpc.StatusCode.ALREADY_EXISTS
        # The channel is full: the same RESOURCE_EXHAUSTED, with and without validate_only.
        full = uuid.uuid4().hex
        assert failure(lambda: create(svc.alice, 10, full, validate_only=True)) \
            == failure(lambda: create(svc.alice, 10, full))
        assert failure(lambda: create(svc.alice, 10, full))[0] \
            == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_validate_only_errors_are_the_real_calls(
    database_url: str, kafka_settings: KafkaSettings,
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        circuit_id = active(svc, 100).circuit_id
        hostile: list[tuple[Client, str, Any]] = [
            (svc.alice, "CreateOrder", order_service_pb2.CreateOrderRequest(
                request_id="", spec=spec(100))),
            (svc.alice, "CreateOrder", order_service_pb2.CreateOrderRequest(
                request_id="r-1", spec=spec(15, a_port="nowhere"))),
            (svc.alice, "CreateOrder", order_service_pb2.CreateOrderRequest(
                request_id="r-2", quote_id="qte-gone")),
            (svc.alice, "ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
                request_id="r-3", circuit_id=circuit_id, bandwidth_mbps=100)),
            (svc.alice, "ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
                request_id="r-4", circuit_id=circuit_id, bandwidth_mbps=10**9)),
            (svc.bob, "ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
                request_id="r-5", circuit_id=circuit_id, bandwidth_mbps=200)),
            (svc.bob, "DisconnectCircuit", order_service_pb2.DisconnectCircuitRequest(
                request_id="r-6", circuit_id=circuit_id)),
            (svc.alice, "DisconnectCircuit", order_service_pb2.DisconnectCircuitRequest(
                request_id="r-7", circuit_id="cct-none")),
            (svc.olga, "DisconnectCircuit", order_service_pb2.DisconnectCircuitRequest(
                request_id="r-8", circuit_id=circuit_id)),
        ]
        for client, method, request in hostile:
            trial = type(request)()
            trial.CopyFrom(request)
            trial.validate_only = True
            real = failure(lambda c=client, m=method, r=request: c.call(m, r))
            assert failure(lambda c=client, m=method, t=trial: c.call(m, t)) == real, method
        assert stored(database_url)["OrderRow"] == 1  # the circuit's NEW order only


def active(svc: OrderService, bandwidth: int) -> order_pb2.Order:
    order = svc.alice.create(bandwidth, a_port=SG_PORT, z_port=CQ_PORT)
    svc.approve_both(order)
    svc.publish(activated(order), order.circuit_id)
    return svc.wait_state(order.id, S.ORDER_STATE_COMPLETED)


def cents(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f}"


def test_previews_of_a_change_and_of_a_disconnect_before_the_term_end(
    database_url: str, kafka_settings: KafkaSettings,
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        circuit_id = active(svc, 100).circuit_id
        circuit = svc.alice.circuit(circuit_id)
        before = stored(database_url)
        zone = ZoneInfo("Asia/Singapore")

        def preview(**change: Any) -> order_service_pb2.ChangePreview:
            response = svc.alice.call("PreviewChange", order_service_pb2.PreviewChangeRequest(
                circuit_id=circuit_id, time_zone="Asia/Singapore", **change))
            result: order_service_pb2.ChangePreview = response.preview
            return result

        gone = preview(disconnect=order_service_pb2.Disconnect())
        change = preview(modify=order_service_pb2.BandwidthChange(bandwidth_mbps=200))
        assert stored(database_url) == before
        started = circuit.activate_time.ToDatetime().replace(tzinfo=ZoneInfo("UTC")) \
            .astimezone(zone).date()
        today = date.fromisoformat(gone.effective_date)
        assert today == started  # activated a moment ago: the whole 12-month term remains
        mrc = Decimal(circuit.price.mrc.amount)
        assert gone.current_price == circuit.price == change.current_price
        assert (gone.remaining_term_months, gone.termination_fee.amount) == (
            12, cents(12 * mrc * Decimal("0.50")))
        assert gone.term_end_date == circuit.term_end_time.ToDatetime().replace(
            tzinfo=ZoneInfo("UTC")).astimezone(zone).date().isoformat()
        days = calendar.monthrange(today.year, today.month)[1]
        assert (gone.proration.current_days, gone.proration.new_days,
                gone.proration.days_in_month) == (0, 0, days)
        assert gone.proration.total.amount == "0.00"

        # The change is priced as the real order will be, and splits the month there.
        new_mrc = Decimal(change.new_price.mrc.amount)
        assert change.termination_fee.amount == "0.00"
        new_days = days - today.day + 1
        assert (change.proration.current_days, change.proration.new_days) == (0, new_days)
        assert change.proration.new_amount.amount == cents(new_mrc * new_days / days)
        trial = svc.alice.call("ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id="r-change", circuit_id=circuit_id, bandwidth_mbps=200,
            validate_only=True)).order
        assert stored(database_url) == before
        assert svc.alice.circuit(circuit_id).pending_order_id == ""
        real = svc.alice.call("ModifyBandwidth", order_service_pb2.ModifyBandwidthRequest(
            request_id="r-change", circuit_id=circuit_id, bandwidth_mbps=200)).order
        assert trial.id == "" and real.id
        assert real.price == trial.price and real.price.mrc == change.new_price.mrc

        # Same refusals as the orders: another tenant, a circuit with an order in progress.
        assert failure(lambda: svc.bob.call(
            "PreviewChange", order_service_pb2.PreviewChangeRequest(
                circuit_id=circuit_id, disconnect=order_service_pb2.Disconnect())))[0] \
            == grpc.StatusCode.NOT_FOUND
        assert failure(lambda: preview(disconnect=order_service_pb2.Disconnect()))[0] \
            == grpc.StatusCode.FAILED_PRECONDITION
        assert failure(lambda: svc.alice.call(
            "PreviewChange", order_service_pb2.PreviewChangeRequest(
                circuit_id=circuit_id, time_zone="Mars/Olympus",
                disconnect=order_service_pb2.Disconnect())))[0] \
            == grpc.StatusCode.INVALID_ARGUMENT
