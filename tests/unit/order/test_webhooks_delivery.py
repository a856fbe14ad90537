"""Webhook delivery on SQLite to a real local HTTPS receiver (its own CA, made here), with
a clock the test moves: signatures, order per circuit, backoff, giving up, a crash between
the POST and the commit, replay, rotation and the tenant's own use cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idc.events.v1 import circuit_pb2
from services.common import db
from services.common.errors import InvalidArgument, NotFound
from services.common.events.envelope import Envelope
from services.order.app import MIGRATIONS
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.webhooks import domain
from services.order.webhooks.delivery import DeliverySender
from services.order.webhooks.fanout import FanOut
from services.order.webhooks.sender import HttpsPoster, Response, tls_context
from services.order.webhooks.store import SecretBox
from services.order.webhooks.subscriptions import Webhooks
from services.order.webhooks.tables import DELIVERED, FAILED, PENDING, DeliveryRow, SubscriptionRow
from tests.unit.order.webhooks_receiver import Receiver

ACTIVATED = "idc.events.v1.CircuitActivated"
POLICY = domain.RetryPolicy(first_s=1, max_s=4, give_up_after_s=30)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class World:
    def __init__(self, directory: Path) -> None:
        url = f"sqlite:///{directory / 'order.db'}"
        db.migrate(url, MIGRATIONS)
        self.engine = db.make_engine(url)
        self.factory = db.make_session_factory(self.engine)
        self.clock = Clock()
        self.box = SecretBox(ContactCipher(ContactKeySet.generate()))
        self.webhooks = Webhooks(self.factory, self.box, self.clock)
        self.receiver = Receiver(directory)
        self.receiver.start()
        self.poster = HttpsPoster(tls_context(self.receiver.ca_file), timeout_s=2)
        self.fanout = FanOut(self.clock)
        self.offset = 0

    def sender(self, poster: HttpsPoster | None = None) -> DeliverySender:
        return DeliverySender(self.factory, poster or self.poster, self.box, POLICY, self.clock)

    def send_all(self, sender: DeliverySender | None = None) -> int:
        sender = sender or self.sender()
        sent = 0
        while sender.send_one():
            sent += 1
        return sent

    def publish(self, tenant: str, circuit: str, bandwidth: int = 100) -> str:
        self.offset += 1
        event_id = f"ev-{self.offset}"
        occurred = Timestamp()
        occurred.FromDatetime(self.clock.now)
        message = circuit_pb2.CircuitActivated(event_id=event_id, occurred_at=occurred,
                                               circuit_id=circuit, tenant_id=tenant,
                                               bandwidth_mbps=bandwidth)
        envelope = Envelope(event_id=event_id, event_type=ACTIVATED, schema_version="1",
                            topic="idc.circuit.events", partition=0, offset=self.offset,
                            key=circuit.encode(), timestamp_ms=None)
        with self.factory.begin() as session:
            self.fanout(session, message, envelope)
        return event_id

    def states(self) -> list[str]:
        with self.factory() as session:
            return [row.state for row in session.query(DeliveryRow).order_by(DeliveryRow.id)]

    def received_ids(self) -> list[str]:
        return [json.loads(r.body)["id"] for r in self.receiver.bodies()]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.receiver.stop()
    w.engine.dispose()


def test_events_arrive_signed_over_https_and_verify(world: World) -> None:
    subscription, secret = world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    event_id = world.publish("t-1", "c-1")
    world.publish("t-2", "c-9")  # another tenant's: not for this endpoint

    assert world.send_all() == 1
    [got] = world.receiver.bodies()
    assert got.headers[domain.EVENT_ID_HEADER] == event_id
    now = int(world.clock.now.timestamp())
    assert domain.verify(secret, got.headers[domain.SIGNATURE_HEADER], got.body, now)
    assert json.loads(got.body)["data"] == {
        "circuitId": "c-1", "tenantId": "t-1", "bandwidthMbps": "100",
        "occurredAt": "2026-12-04T02:00:00Z"}
    [(delivery, attempts)] = world.webhooks.deliveries("t-1", subscription.id, 10, None)
    assert delivery.state == DELIVERED
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 204)]


def test_a_receiver_down_for_a_while_gets_every_event_in_order_per_circuit(
        world: World) -> None:
    subscription, _ = world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    world.receiver.stop()
    published = [world.publish("t-1", circuit, bw) for bw in (100, 200, 300)
                 for circuit in ("c-a", "c-b")]
    # Down: only the head of each circuit's queue is tried, then each waits its backoff.
    assert world.send_all() == 2
    world.clock.advance(1)
    assert world.send_all() == 2
    world.clock.advance(1)
    assert world.send_all() == 0  # the second delay is 2 s
    world.receiver.start()
    world.clock.advance(1)
    assert world.send_all() == 6

    assert sorted(world.received_ids()) == sorted(published)
    for circuit in ("c-a", "c-b"):
        bandwidths = [json.loads(r.body)["data"]["bandwidthMbps"]
                      for r in world.receiver.bodies()
                      if json.loads(r.body)["data"]["circuitId"] == circuit]
        assert bandwidths == ["100", "200", "300"]
    log = world.webhooks.deliveries("t-1", subscription.id, 10, None)
    heads = [attempts for delivery, attempts in log if len(attempts) > 1]
    assert len(heads) == 2
    assert [a.status_code for a in heads[0]] == [0, 0, 204]
    assert all(a.error for a in heads[0][:2])


def test_after_the_retry_window_a_delivery_is_given_up_and_the_queue_moves_on(
        world: World) -> None:
    world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    world.receiver.stop()
    world.publish("t-1", "c-1")
    world.publish("t-1", "c-1")
    sender = world.sender()
    for _ in range(40):
        sender.send_one()
        world.clock.advance(1)
    assert world.states()[0] == FAILED
    assert sender.given_up_recently() and "given up" in sender.given_up_recently()[0]
    world.receiver.start()
    world.clock.advance(5)
    world.send_all(sender)
    assert world.states()[1] == DELIVERED
    world.clock.advance(3601)
    assert sender.given_up_recently() == []


class CrashAfterPost(HttpsPoster):
    """Posts, then dies before the attempt is committed: the sender restarting."""

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        super().post(url, body, headers)
        raise RuntimeError("killed")


def test_a_crash_between_post_and_commit_sends_again_with_the_same_event_id(
        world: World) -> None:
    world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    first = world.publish("t-1", "c-1")
    second = world.publish("t-1", "c-1")
    with pytest.raises(RuntimeError):
        world.sender(CrashAfterPost(tls_context(world.receiver.ca_file), 2)).send_one()
    assert world.states() == [PENDING, PENDING]
    assert world.send_all() == 2
    assert world.received_ids() == [first, first, second]


def test_replay_from_a_time_sends_those_events_again_once_each_with_their_ids(
        world: World) -> None:
    subscription, _ = world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    world.publish("t-1", "c-1")
    since = world.clock.now + timedelta(seconds=1)
    world.clock.advance(2)
    later = [world.publish("t-1", "c-1"), world.publish("t-1", "c-2")]
    world.send_all()
    assert world.webhooks.replay("t-1", subscription.id, since) == 2
    assert world.webhooks.replay("t-1", subscription.id, since) == 2  # not 4: once each
    world.send_all()
    assert world.received_ids()[3:] == later + later


def test_rotation_signs_with_both_secrets_and_the_test_delivery_arrives(world: World) -> None:
    subscription, old = world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    new = world.webhooks.rotate("t-1", subscription.id)
    event_id = world.webhooks.send_test("t-1", subscription.id)
    world.send_all()
    [got] = world.receiver.bodies()
    assert json.loads(got.body)["type"] == domain.TEST_EVENT_TYPE
    assert got.headers[domain.EVENT_ID_HEADER] == event_id
    now = int(world.clock.now.timestamp())
    for secret in (old, new):
        assert domain.verify(secret, got.headers[domain.SIGNATURE_HEADER], got.body, now)
    newest = world.webhooks.rotate("t-1", subscription.id)
    world.webhooks.send_test("t-1", subscription.id)
    world.send_all()
    header = world.receiver.bodies()[1].headers[domain.SIGNATURE_HEADER]
    body = world.receiver.bodies()[1].body
    assert domain.verify(newest, header, body, now) and domain.verify(new, header, body, now)
    assert not domain.verify(old, header, body, now)


def test_a_tenant_sees_only_its_own_subscriptions_and_has_at_most_ten(world: World) -> None:
    subscription, _ = world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    with pytest.raises(NotFound):
        world.webhooks.deliveries("t-2", subscription.id, 10, None)
    with pytest.raises(NotFound):
        world.webhooks.delete("t-2", subscription.id)
    assert world.webhooks.subscriptions("t-2") == []
    for _ in range(9):
        world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    with pytest.raises(InvalidArgument, match="at most 10"):
        world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    world.webhooks.delete("t-1", subscription.id)
    assert len(world.webhooks.subscriptions("t-1")) == 9


def test_a_receiver_with_a_certificate_from_another_ca_is_not_posted_to(
        world: World, tmp_path: Path) -> None:
    world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    world.publish("t-1", "c-1")
    stranger = Receiver(tmp_path / "other")
    world.send_all(world.sender(HttpsPoster(tls_context(stranger.ca_file), 2)))
    assert world.receiver.bodies() == []
    assert world.states() == [PENDING]


def test_a_secret_that_does_not_open_is_retried_without_holding_back_other_endpoints(
        world: World) -> None:
    broken, _ = world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    world.webhooks.create("t-2", world.receiver.url, [ACTIVATED])
    world.publish("t-1", "c-1")
    other = world.publish("t-2", "c-2")
    stranger = SecretBox(ContactCipher(ContactKeySet.generate()))
    sender = DeliverySender(world.factory, world.poster, stranger, POLICY, world.clock)
    with world.factory.begin() as session:
        stranger.seal_into(session.get(SubscriptionRow, world.webhooks.subscriptions("t-2")[0].id),
                           ["s"])
    world.send_all(sender)
    assert world.received_ids() == [other]
    [(delivery, attempts)] = world.webhooks.deliveries("t-1", broken.id, 10, None)
    assert delivery.state == PENDING and "cannot sign" in attempts[0].error


def test_events_from_before_a_subscription_existed_are_not_sent_to_it(world: World) -> None:
    earlier = world.publish("t-1", "c-1")  # nobody subscribed yet
    world.clock.advance(5)
    world.webhooks.create("t-1", world.receiver.url, [ACTIVATED])
    # A consumer catching up reads the earlier event again, after the subscription: old
    # by its occurred_at, and by its record's timestamp when it has none.
    message = circuit_pb2.CircuitActivated(event_id="ev-old", circuit_id="c-1",
                                           tenant_id="t-1", bandwidth_mbps=100)
    published = int((world.clock.now - timedelta(seconds=4)).timestamp() * 1000)
    envelope = Envelope(event_id="ev-old", event_type=ACTIVATED, schema_version="1",
                        topic="idc.circuit.events", partition=0, offset=99,
                        key=b"c-1", timestamp_ms=published)
    with world.factory.begin() as session:
        world.fanout(session, message, envelope)
    later = world.publish("t-1", "c-1")
    world.send_all()
    assert world.received_ids() == [later]
    assert earlier not in world.received_ids()
