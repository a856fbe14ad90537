"""The outbox relay wakes when a transaction that wrote outbox rows commits, without
waiting for its poll. Run with ``-p tests.fixtures.kafka``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition

from idc.events.v1.order_pb2 import OrderApproved
from services.common.config import KafkaSettings
from services.common.db import transaction
from services.common.events import outbox
from services.common.events.relay import OutboxRelay
from tests.fixtures.kafka import EventDB

pytestmark = pytest.mark.integration

# Far longer than the test may take: a record seen at all came from a wake-up.
NEVER_POLLS_S = 3600.0
WAIT_S = 60.0


@pytest.fixture
def relay_thread(event_db: EventDB, kafka_settings: KafkaSettings) -> Iterator[OutboxRelay]:
    relay = OutboxRelay(event_db.session_factory, kafka_settings, poll_interval_s=NEVER_POLLS_S)
    stop = threading.Event()
    # The first round (nothing to send) runs at once; then the relay sleeps on its poll.
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    yield relay
    stop.set()
    relay._wake.set()  # end the poll wait now
    thread.join(timeout=30)
    relay.close()


def received(kafka_settings: KafkaSettings, topic: str, expected: int) -> list[str]:
    consumer = KafkaConsumer(bootstrap_servers=kafka_settings.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(topic, p)
                         for p in consumer.partitions_for_topic(topic) or {0}])
        found: list[str] = []
        deadline = time.monotonic() + WAIT_S
        while len(found) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    event = OrderApproved()
                    event.ParseFromString(record.value)
                    found.append(event.order_id)
        return found
    finally:
        consumer.close()


def test_a_commit_with_outbox_rows_wakes_the_relay(
    relay_thread: OutboxRelay, event_db: EventDB, kafka_settings: KafkaSettings, topic: str
) -> None:
    time.sleep(0.5)  # let the first (empty) round pass, so the relay waits on its poll
    with transaction(event_db.session_factory) as session:
        outbox.add(session, topic, "k", OrderApproved(order_id="woken"))
    assert received(kafka_settings, topic, 1) == ["woken"]


def test_a_rolled_back_transaction_leaves_nothing_to_wake_for(
    relay_thread: OutboxRelay, event_db: EventDB, kafka_settings: KafkaSettings, topic: str
) -> None:
    time.sleep(0.5)
    with event_db.session_factory() as session, session.begin():
        outbox.add(session, topic, "k", OrderApproved(order_id="rolled back"))
        session.rollback()
    assert not relay_thread._wake.is_set()
    with transaction(event_db.session_factory) as session:
        outbox.add(session, topic, "k", OrderApproved(order_id="committed"))
    assert received(kafka_settings, topic, 1) == ["committed"]
