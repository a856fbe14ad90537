"""The delivery worker: sends due deliveries one at a time, in order per circuit, with
exponential backoff, and gives up after the retry window (the tenant's delivery log says so,
and operators get the ``webhook-given-up`` alarm for an hour).

At least once: the attempt is recorded in the transaction that holds the delivery's row
lock, after the POST; a crash between the two sends it again with the same event id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.common.grpc_server import AlarmCheck, Worker
from services.order.contacts import ContactsUnreadable
from services.order.webhooks import domain, store
from services.order.webhooks.sender import Poster, Response
from services.order.webhooks.tables import DELIVERED, FAILED, DeliveryRow, SubscriptionRow

log = logging.getLogger(__name__)
GIVEN_UP_ALARM = "webhook-given-up"
GIVEN_UP_ALARM_HOLD = timedelta(hours=1)


class DeliverySender:
    def __init__(self, factory: sessionmaker[Session], poster: Poster, box: store.SecretBox,
                 policy: domain.RetryPolicy, clock: Callable[[], datetime]) -> None:
        self._factory = factory
        self._poster = poster
        self._box = box
        self._policy = policy
        self._clock = clock
        # (when, text) of deliveries given up, read by the health monitor's thread.
        self._given_up: list[tuple[datetime, str]] = []
        self._lock = threading.Lock()

    def given_up_recently(self) -> list[str]:
        horizon = self._clock() - GIVEN_UP_ALARM_HOLD
        with self._lock:
            self._given_up = [(at, text) for at, text in self._given_up if at >= horizon]
            return [text for _, text in self._given_up]

    def send_one(self) -> bool:
        """Try the next due delivery; False when none is due."""
        with self._factory.begin() as session:
            delivery = store.next_due(session, self._clock())
            if delivery is None:
                return False
            subscription = session.get(SubscriptionRow, delivery.subscription_id)
            assert subscription is not None  # deleting a subscription deletes its deliveries
            self._attempt(session, subscription, delivery)
            return True

    def _attempt(self, session: Session, subscription: SubscriptionRow,
                 delivery: DeliveryRow) -> None:
        started = time.monotonic()
        timestamp = int(self._clock().timestamp())
        try:
            secrets_in_force = self._box.open(subscription)
        except ContactsUnreadable as exc:
            # Never unsigned; retried like a failed POST so other queues keep moving.
            response = Response(0, f"cannot sign: {exc}")
        else:
            response = self._poster.post(subscription.url, delivery.body, {
                domain.SIGNATURE_HEADER: domain.signature_header(
                    secrets_in_force, timestamp, delivery.body),
                domain.EVENT_ID_HEADER: delivery.event_id,
                domain.EVENT_TYPE_HEADER: delivery.event_type,
            })
        now = self._clock()
        store.record_attempt(session, delivery, now, response.status_code, response.error,
                             int((time.monotonic() - started) * 1000))
        if response.ok:
            store.finish(delivery, DELIVERED, now)
        elif delivery.first_attempt_at and self._policy.gives_up(delivery.first_attempt_at, now):
            store.finish(delivery, FAILED, now)
            text = (f"webhook delivery {delivery.id} (event {delivery.event_id}) to "
                    f"subscription {subscription.id} given up after {delivery.attempts} "
                    f"attempts: {response.error}")
            log.warning("%s", text)
            with self._lock:
                self._given_up.append((now, text))
        else:
            delivery.next_attempt_at = now + self._policy.delay_after(delivery.attempts)


class DeliveryWorker(Worker):
    name = "webhook-delivery"

    def __init__(self, sender: DeliverySender, poll_s: float) -> None:
        self._sender = sender
        self._poll_s = poll_s

    def alarms(self) -> dict[str, AlarmCheck]:
        return {GIVEN_UP_ALARM: self._sender.given_up_recently}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self._sender.send_one()
            except Exception:
                log.exception("webhook delivery failed; trying again next round")
                busy = False
            if not busy:
                stop.wait(self._poll_s)
