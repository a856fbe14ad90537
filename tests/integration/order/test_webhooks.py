"""Signed webhooks from the real order service (PostgreSQL, the real broker) to a real local
HTTPS receiver whose CA is made here: an order's own events and its circuit's activation
arrive signed and verify; a receiver down for a while gets every event afterwards, in order
per circuit; a restart of the service while deliveries wait loses nothing, and any repeat
carries the same event id; the delivery log, a test delivery and a replay from a time.

Circuit events are fed through the broker as the provisioning service would publish them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.order.v1 import order_pb2
from idc.order.v1 import webhook_service_pb2 as pb
from idc.order.v1 import webhook_service_pb2_grpc as pb_grpc
from services.common.config import KafkaSettings
from services.common.grpc_server import call_metadata
from services.order.contacts import ContactKeySet
from services.order.settings import OrderSettings
from services.order.webhooks import domain
from tests.integration.order import harness
from tests.integration.order.harness import (
    KEYS,
    PRINCIPALS,
    OrderService,
    activated,
    running_order_service,
    wait_for,
)
from tests.unit.order.webhooks_receiver import Receiver

pytestmark = pytest.mark.integration

ACTIVATED = "idc.events.v1.CircuitActivated"
CLEARED = "idc.events.v1.DriftCleared"
ORDER_FLOW = ("idc.events.v1.OrderCreated", "idc.events.v1.OrderApproved",
              "idc.events.v1.OrderCompleted")
FAST = {"webhook_retry_first_s": 1, "webhook_retry_max_s": 2, "webhook_poll_ms": 50,
        "webhook_timeout_s": 2}


class Hooks:
    """WebhookService as one customer of the running service."""

    def __init__(self, address: str, who: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.WebhookServiceStub(self._channel)
        self._md = call_metadata(KEYS.mint(PRINCIPALS[who]))

    def __call__(self, method: str, request: Any) -> Any:
        return getattr(self._stub, method)(request, metadata=self._md, timeout=30)

    def close(self) -> None:
        self._channel.close()


@contextmanager
def service(database_url: str, kafka: KafkaSettings, receiver: Receiver,
            **settings: Any) -> Iterator[tuple[OrderService, Hooks]]:
    with running_order_service(database_url, kafka, webhook_ca_file=receiver.ca_file,
                               **FAST, **settings) as svc:
        hooks = Hooks(svc.address, "alice")
        try:
            yield svc, hooks
        finally:
            hooks.close()


def received_of(receiver: Receiver, circuits: set[str]) -> list[dict[str, Any]]:
    """The documents received for ``circuits`` (the broker also holds earlier tests' events)."""
    return [doc for doc in (json.loads(r.body) for r in receiver.bodies())
            if doc["data"].get("circuitId") in circuits]


def cleared(circuit_id: str, tenant_id: str = "acme") -> circuit_events.DriftCleared:
    now = Timestamp()
    now.GetCurrentTime()
    return circuit_events.DriftCleared(event_id=str(uuid.uuid4()), occurred_at=now,
                                       circuit_id=circuit_id, tenant_id=tenant_id)


def test_an_orders_activation_arrives_signed_and_the_log_test_and_replay_work(
        database_url: str, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    receiver.start()
    with service(database_url, kafka_settings, receiver) as (svc, hooks):
        created = hooks("CreateSubscription", pb.CreateSubscriptionRequest(
            url=receiver.url, event_types=[ACTIVATED, *ORDER_FLOW]))
        subscription_id = created.subscription.id
        order = svc.alice.create(100)
        svc.approve_both(order)
        before = Timestamp()
        before.GetCurrentTime()
        # An event without its own time is dated by its record's timestamp, in milliseconds.
        before.FromMilliseconds(before.ToMilliseconds())
        event = activated(order)
        svc.publish(event, order.circuit_id)
        svc.wait_state(order.id, order_pb2.ORDER_STATE_COMPLETED)

        got = wait_for(lambda: [r for r in receiver.bodies()
                                if r.headers[domain.EVENT_ID_HEADER] == event.event_id],
                       "the activation at the receiver")[0]
        assert domain.verify(created.secret, got.headers[domain.SIGNATURE_HEADER], got.body,
                             int(time.time()))
        assert json.loads(got.body)["data"]["circuitId"] == order.circuit_id
        assert "acme link" not in got.body.decode()  # the order's free text stays home
        flow = wait_for(lambda: (types := [d["type"] for d in received_of(
            receiver, {order.circuit_id}) if d["type"] in ORDER_FLOW]) == list(ORDER_FLOW)
            and types, "the order's own events, in order")
        assert flow == list(ORDER_FLOW)
        names = [json.dumps(d) for d in received_of(receiver, {order.circuit_id})]
        assert not any("olga" in text or "chen" in text for text in names)  # approvers

        test_id = hooks("SendTestDelivery", pb.SendTestDeliveryRequest(
            subscription_id=subscription_id)).event_id
        wait_for(lambda: any(r.headers[domain.EVENT_ID_HEADER] == test_id
                             for r in receiver.bodies()), "the test delivery")
        log = wait_for(lambda: [d for d in hooks("ListDeliveries", pb.ListDeliveriesRequest(
            subscription_id=subscription_id)).deliveries
            if d.state == pb.WebhookDelivery.STATE_DELIVERED] or None, "the delivery log")
        assert {d.event_id for d in log} >= {event.event_id, test_id}
        assert all(d.attempts[-1].status_code == 204 for d in log)

        queued = hooks("ReplayDeliveries", pb.ReplayDeliveriesRequest(
            subscription_id=subscription_id, since=before)).queued
        assert queued == 3  # the activation, OrderCompleted and the test delivery
        wait_for(lambda: sum(r.headers[domain.EVENT_ID_HEADER] == event.event_id
                             for r in receiver.bodies()) == 2, "the replayed activation")

        bob = Hooks(svc.address, "bob")
        with pytest.raises(grpc.RpcError) as refused:
            bob("ListDeliveries", pb.ListDeliveriesRequest(subscription_id=subscription_id))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        bob.close()
    receiver.stop()


def test_a_receiver_down_for_a_while_then_a_restart_loses_nothing_and_repeats_nothing_new(
        database_url: str, kafka_settings: KafkaSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver(tmp_path)
    # Both runs of the service in the same consumer groups and with the same keys, as a
    # restarted process is.
    group = f"order-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(harness, "OrderSettings", lambda **fields: OrderSettings(
        **{**fields, "consumer_group": group}))
    keys = ContactKeySet.generate("test-1")
    monkeypatch.setattr(harness.ContactKeySet, "generate", lambda key_id: keys)
    circuits = [f"c-wh-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    per_circuit = 5
    sent: dict[str, list[str]] = {c: [] for c in circuits}
    with service(database_url, kafka_settings, receiver,) as (svc, hooks):
        subscription_id = hooks("CreateSubscription", pb.CreateSubscriptionRequest(
            url=receiver.url, event_types=[CLEARED])).subscription.id
        for _ in range(per_circuit):
            for circuit in circuits:
                message = cleared(circuit)
                svc.publish(message, circuit)
                sent[circuit].append(message.event_id)
        # The receiver is down: attempts fail and wait their backoff.
        wait_for(lambda: sum(len(d.attempts) for d in hooks("ListDeliveries",
                 pb.ListDeliveriesRequest(subscription_id=subscription_id)).deliveries) >= 4,
                 "failed attempts while the receiver is down")
    # The service restarts (same database, same consumer groups) and the receiver returns.
    receiver.start()
    with service(database_url, kafka_settings, receiver,) as (svc, hooks):
        wanted = {e for events in sent.values() for e in events}
        wait_for(lambda: wanted <= {d["id"] for d in received_of(receiver, set(circuits))},
                 "every event at the receiver after the restart", timeout_s=60)
        docs = received_of(receiver, set(circuits))
        for circuit in circuits:
            ids = [d["id"] for d in docs if d["data"]["circuitId"] == circuit]
            assert list(dict.fromkeys(ids)) == sent[circuit]  # in order, per circuit
        repeats = {e: n for e, n in Counter(d["id"] for d in docs).items() if n > 1}
        assert repeats == {}, repeats
        log = hooks("ListDeliveries", pb.ListDeliveriesRequest(
            subscription_id=subscription_id, page_size=100)).deliveries
        ours = [d for d in log if d.circuit_id in circuits]
        retries = sum(len(d.attempts) - 1 for d in ours)
        assert retries >= 2 and all(d.state == pb.WebhookDelivery.STATE_DELIVERED for d in ours)
        print(f"webhook figures: {len(wanted)} events delivered, {retries} retries, "
              f"{len(repeats)} duplicates")
    receiver.stop()


def test_at_most_ten_https_endpoints_a_tenant(
        database_url: str, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    with service(database_url, kafka_settings, receiver) as (_, hooks):
        for existing in hooks("ListSubscriptions", pb.ListSubscriptionsRequest()).subscriptions:
            hooks("DeleteSubscription", pb.DeleteSubscriptionRequest(
                subscription_id=existing.id))
        with pytest.raises(grpc.RpcError) as refused:
            hooks("CreateSubscription", pb.CreateSubscriptionRequest(
                url="http://plain.example/hooks", event_types=[ACTIVATED]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(10):
            hooks("CreateSubscription", pb.CreateSubscriptionRequest(
                url=receiver.url, event_types=[ACTIVATED]))
        with pytest.raises(grpc.RpcError) as full:
            hooks("CreateSubscription", pb.CreateSubscriptionRequest(
                url=receiver.url, event_types=[ACTIVATED]))
        assert full.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 10" in (full.value.details() or "")
        for existing in hooks("ListSubscriptions", pb.ListSubscriptionsRequest()).subscriptions:
            hooks("DeleteSubscription", pb.DeleteSubscriptionRequest(
                subscription_id=existing.id))
