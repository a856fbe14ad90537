"""A circuit's health for its customer, from the drift events provisioning publishes, through
the real broker into the order service's circuit-event consumer: out of service while a
router lost it, in sync again once cleared; no router internals on GetCircuit; a redelivered
event has no second effect."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from idc.type.v1 import side_pb2
from services.common.config import KafkaSettings
from tests.integration.order.harness import (
    OrderService,
    activated,
    running_order_service,
    spec,
    wait_for,
)

pytestmark = pytest.mark.integration

H = circuit_pb2.CircuitHealth


def stamp(moment: datetime) -> Timestamp:
    found = Timestamp()
    found.FromDatetime(moment)
    return found


def shown_as(svc: OrderService, circuit_id: str, health: int) -> circuit_pb2.Circuit:
    """The circuit once GetCircuit shows ``health`` (waiting for the consumer)."""
    def check() -> circuit_pb2.Circuit | None:
        circuit = svc.alice.circuit(circuit_id)
        return circuit if circuit.health == health else None

    return wait_for(check, f"circuit {circuit_id} {H.Name(health)}")


def test_drift_events_show_on_the_customers_circuit(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = svc.alice.call("CreateOrder", order_service_pb2.CreateOrderRequest(
            request_id=str(uuid.uuid4()), spec=spec(100))).order
        svc.approve_both(order)
        svc.publish(activated(order), order.circuit_id)
        svc.wait_state(order.id, order_pb2.ORDER_STATE_COMPLETED)
        assert svc.alice.circuit(order.circuit_id).health == H.CIRCUIT_HEALTH_IN_SYNC

        at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=60)
        lost = circuit_events.DriftDetected(
            event_id=str(uuid.uuid4()), circuit_id=order.circuit_id, tenant_id=order.tenant_id,
            side=side_pb2.SIDE_CHONGQING, router_name="cq-edge-1",
            kind=circuit_events.DRIFT_KIND_MISSING, occurred_at=stamp(at),
            drifted_since=stamp(at))
        svc.publish(lost, order.circuit_id)
        shown = shown_as(svc, order.circuit_id, H.CIRCUIT_HEALTH_OUT_OF_SERVICE)
        assert shown.health_since == lost.drifted_since
        assert shown.state == circuit_pb2.CIRCUIT_STATE_ACTIVE, "the order's story is unchanged"

        cleared = circuit_events.DriftCleared(
            event_id=str(uuid.uuid4()), circuit_id=order.circuit_id, tenant_id=order.tenant_id,
            side=side_pb2.SIDE_CHONGQING, router_name="cq-edge-1",
            drifted_since=lost.drifted_since)
        cleared.occurred_at.CopyFrom(stamp(at + timedelta(seconds=60)))
        svc.publish(cleared, order.circuit_id)
        shown = shown_as(svc, order.circuit_id, H.CIRCUIT_HEALTH_IN_SYNC)
        assert shown.health_since == cleared.occurred_at

        # The same DriftDetected again (same event id): the inbox skips it. A marker event
        # after it shows the consumer got past it.
        svc.publish(lost, order.circuit_id)
        marker = circuit_events.DriftDetected(
            event_id=str(uuid.uuid4()), circuit_id=order.circuit_id, tenant_id=order.tenant_id,
            side=side_pb2.SIDE_SINGAPORE, router_name="sg-edge-1",
            kind=circuit_events.DRIFT_KIND_DIFFERENT)
        marker.occurred_at.CopyFrom(stamp(at + timedelta(seconds=120)))
        marker.drifted_since.CopyFrom(marker.occurred_at)
        svc.publish(marker, order.circuit_id)
        shown = shown_as(svc, order.circuit_id, H.CIRCUIT_HEALTH_DRIFT_BEING_REPAIRED)
        assert shown.health_since == marker.drifted_since, "the redelivery changed nothing"
