"""Background work of the order service: the circuit-event consumer and approval expiry."""

from __future__ import annotations

import logging
import threading

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from idc.events.v1 import circuit_pb2, provisioning_pb2
from services.common.config import KafkaSettings
from services.common.events import EventConsumer, register_event
from services.common.events.envelope import Envelope
from services.common.events.topics import CIRCUIT_EVENTS
from services.common.grpc_server import Worker
from services.common.runtime import ConsumerWorker
from services.order.orders import OrderApp

log = logging.getLogger(__name__)

OUTCOME_EVENTS = (
    circuit_pb2.CircuitActivated,
    circuit_pb2.CircuitModified,
    circuit_pb2.CircuitDisconnected,
    circuit_pb2.ProvisioningFailed,
)
for _event_class in (*OUTCOME_EVENTS, provisioning_pb2.ProvisioningPlanned):
    register_event(_event_class)


class CircuitEventHandler:
    """Routes events of idc.circuit.events to the use cases; others on the topic are skipped."""

    def __init__(self, app: OrderApp) -> None:
        self.app = app

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        if isinstance(event, provisioning_pb2.ProvisioningPlanned):
            self.app.record_plan(session, event)
        elif isinstance(event, OUTCOME_EVENTS):
            self.app.record_outcome(session, event)
        else:
            log.debug("event %s is not for the order service", envelope.event_type)


def circuit_event_worker(app: OrderApp, kafka: KafkaSettings, group_id: str) -> ConsumerWorker:
    return ConsumerWorker(
        "circuit-events",
        lambda: EventConsumer(
            [CIRCUIT_EVENTS], group_id, CircuitEventHandler(app), app.factory, kafka
        ),
    )


class ApprovalExpiryWorker(Worker):
    name = "approval-expiry"

    def __init__(self, app: OrderApp, interval_s: float) -> None:
        self._app = app
        self._interval_s = interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            try:
                expired = self._app.expire_due()
            except Exception:
                log.exception("approval expiry failed; trying again next round")
                continue
            if expired:
                log.info("%d order(s) expired waiting for approval", expired)
