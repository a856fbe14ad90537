"""The consumer of idc.order.events and idc.circuit.events that queues one delivery per
subscribed endpoint. Circuit events name their tenant; an order event's tenant and circuit
are its order's row.

It runs in its own consumer group, so the inbox makes each event queue once per
subscription however often Kafka redelivers it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import order_pb2
from services.common.config import KafkaSettings
from services.common.events import EventConsumer, register_event
from services.common.events.envelope import Envelope
from services.common.events.topics import CIRCUIT_EVENTS, ORDER_EVENTS
from services.common.runtime import ConsumerWorker
from services.order.tables import OrderRow
from services.order.webhooks import domain, store

for _event_class in (order_pb2.OrderCreated, order_pb2.OrderApproved, order_pb2.OrderRejected,
                     order_pb2.OrderCancelled, order_pb2.OrderCompleted,
                     order_pb2.OrderAwaitingApproval):
    register_event(_event_class)


def event_of(session: Session, message: Message,
             envelope: Envelope) -> tuple[str, store.Event] | None:
    """The tenant and the delivery content of a subscribable event; None for the others."""
    if envelope.event_type not in domain.EVENT_TYPES:
        return None
    fields = MessageToDict(message)
    if envelope.event_type in domain.ORDER_EVENT_TYPES:
        order = session.get(OrderRow, str(fields.get("orderId", "")))
        if order is None:
            return None
        fields |= {"tenantId": order.tenant_id, "circuitId": order.circuit_id}
    tenant_id = str(fields.get("tenantId", ""))
    circuit_id = str(fields.get("circuitId", ""))
    if not tenant_id:
        return None
    created = _happened_at(message, envelope)
    body = domain.event_body(envelope.event_id, envelope.event_type, created, fields)
    return tenant_id, store.Event(envelope.event_id, envelope.event_type, circuit_id, body,
                                  created)


def _happened_at(message: Message, envelope: Envelope) -> datetime:
    """The event's own time; else when it was published (the record's timestamp), so an
    old event read late is never taken for a new one."""
    occurred = getattr(message, "occurred_at", None)
    if occurred is not None and occurred.seconds:
        return occurred.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    if envelope.timestamp_ms is not None:
        return datetime.fromtimestamp(envelope.timestamp_ms / 1000, UTC)
    return datetime.now(UTC)


class FanOut:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        found = event_of(session, event, envelope)
        if found is None:
            return
        tenant_id, content = found
        for row in store.subscribers(session, tenant_id, content.event_type):
            if domain.wants(row.created_at, content.created_at):
                store.enqueue(session, row, content, self._clock())


def fanout_worker(factory: sessionmaker[Session], kafka: KafkaSettings, group_id: str,
                  clock: Callable[[], datetime]) -> ConsumerWorker:
    return ConsumerWorker(
        "webhook-fanout",
        lambda: EventConsumer([ORDER_EVENTS, CIRCUIT_EVENTS], group_id, FanOut(clock),
                              factory, kafka),
    )
