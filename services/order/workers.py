"""Background work of the order service: the circuit-event consumer, approval expiry and
the alarm for orders overdue with provisioning."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from google.protobuf.message import Message
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, provisioning_pb2
from services.common.config import KafkaSettings
from services.common.events import EventConsumer, register_event
from services.common.events.envelope import Envelope
from services.common.events.topics import CIRCUIT_EVENTS
from services.common.grpc_server import AlarmCheck, Worker
from services.common.runtime import ConsumerWorker
from services.order.health import DRIFT_EVENTS, record_drift
from services.order.orders import OrderApp

log = logging.getLogger(__name__)

OUTCOME_EVENTS = (
    circuit_pb2.CircuitActivated,
    circuit_pb2.CircuitModified,
    circuit_pb2.CircuitDisconnected,
    circuit_pb2.ProvisioningFailed,
)
for _event_class in (*OUTCOME_EVENTS, *DRIFT_EVENTS, provisioning_pb2.ProvisioningPlanned,
                     provisioning_pb2.ProvisioningProgress):
    register_event(_event_class)


class CircuitEventHandler:
    """Routes events of idc.circuit.events to the use cases; others on the topic are skipped."""

    def __init__(self, app: OrderApp) -> None:
        self.app = app

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        if isinstance(event, provisioning_pb2.ProvisioningPlanned):
            self.app.outcomes.record_plan(session, event)
        elif isinstance(event, provisioning_pb2.ProvisioningProgress):
            self.app.outcomes.record_progress(session, event)
        elif isinstance(event, OUTCOME_EVENTS):
            self.app.outcomes.record_outcome(session, event)
        elif isinstance(event, DRIFT_EVENTS):
            record_drift(session, event, self.app.clock())
        else:
            log.debug("event %s is not for the order service", envelope.event_type)


def circuit_event_worker(app: OrderApp, factory: sessionmaker[Session], kafka: KafkaSettings,
                         group_id: str) -> ConsumerWorker:
    """The consumer opens one transaction per event in ``factory``'s sessions."""
    return ConsumerWorker(
        "circuit-events",
        lambda: EventConsumer([CIRCUIT_EVENTS], group_id, CircuitEventHandler(app), factory, kafka),
    )


class RoundWorker(Worker):
    """Runs one round of ``work`` (returning how many orders it acted on) every
    ``interval_s``: approval expiry, and the start of scheduled orders (a scheduled
    change, a boost, its revert) on the service's clock, without a person. A failed round
    is logged and tried again next round."""

    def __init__(self, name: str, interval_s: float, work: Callable[[], int],
                 done: str) -> None:
        self.name = name
        self._interval_s = interval_s
        self._work = work
        self._done = done  # what a round did, after the count: "order(s) expired ..."

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            self.run_once()

    def run_once(self) -> None:
        try:
            acted = self._work()
        except Exception:
            log.exception("%s failed; trying again next round", self.name)
            return
        if acted:
            log.info("%d %s", acted, self._done)


def approval_expiry_worker(app: OrderApp, interval_s: float) -> RoundWorker:
    return RoundWorker("approval-expiry", interval_s, app.approving.expire_due,
                       "order(s) expired waiting for approval")


def scheduled_start_worker(app: OrderApp, interval_s: float) -> RoundWorker:
    return RoundWorker("scheduled-start", interval_s, app.approving.start_due,
                       "scheduled order(s) started or failed at their start")


OVERDUE_ALARM = "provisioning-overdue"


class OverdueSource(Protocol):
    def overdue(self) -> list[str]:
        """The texts of the orders overdue with provisioning now."""


class OverdueProvisioningWorker(Worker):
    """Raises the ``provisioning-overdue`` alarm (health service
    ``idc.alarm.provisioning-overdue``, logged on raise and change) while an order has been
    with provisioning longer than ``IDC_ORDER_PROVISIONING_ALARM_S`` without an outcome."""

    name = "provisioning-overdue"

    def __init__(self, app: OverdueSource, interval_s: float) -> None:
        self._app = app
        self._interval_s = interval_s
        # The texts of the last check, read by the health monitor's thread.
        self._texts: list[str] = []
        self._lock = threading.Lock()

    def alarms(self) -> dict[str, AlarmCheck]:
        return {OVERDUE_ALARM: self._current}

    def _current(self) -> Sequence[str]:
        with self._lock:
            return list(self._texts)

    def run(self, stop: threading.Event) -> None:
        while True:
            self.run_once()
            if stop.wait(self._interval_s):
                return

    def run_once(self) -> None:
        try:
            texts = self._app.overdue()
        except Exception as exc:
            # Not knowing is itself worth an alarm: the orders may be waiting unseen.
            log.exception("overdue provisioning check failed; trying again next round")
            texts = [f"cannot check for orders overdue with provisioning: "
                     f"{type(exc).__name__}: {exc}"]
        with self._lock:
            self._texts = texts
