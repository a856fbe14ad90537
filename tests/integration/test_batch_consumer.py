"""The batch mode of the event consumer against the real broker, on SQLite and PostgreSQL.

Records meant to arrive in one poll are sent by one producer in one record batch (the
broker hands a record batch to a consumer whole), so "one poll" does not depend on timing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf.message import Message
from kafka import KafkaProducer, TopicPartition
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from idc.events.v1.order_pb2 import OrderApproved
from services.common.config import KafkaSettings
from services.common.events import BatchEventConsumer, InboxRow, RejectedItems
from services.common.events.consumer import HEADER_DLQ_ERROR
from services.common.events.envelope import Envelope, EventRegistry, encode_event, headers_dict
from services.common.events.topics import dead_letter_topic
from tests.fixtures.kafka import EventDB
from tests.integration.test_event_bus import committed_offset, read_topic

pytestmark = pytest.mark.integration

WAIT_S = 20.0
KEY = b"circuit-batch"
REGISTRY = EventRegistry([OrderApproved])

effects_metadata = MetaData()
effects = Table(
    "test_batch_effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("text", String(200), nullable=False),
)


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the bus catches it."""


@dataclass
class BatchRecorder:
    """A batch handler writing one effect row per event (the event's order id is its text).

    Texts in ``reject`` are rejected as bad input; a text in ``fail_on`` makes every call
    that contains it raise the error made by its factory (the error sticks to the event).
    """

    reject: set[str] = field(default_factory=set)
    fail_on: dict[str, Callable[[], Exception]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, session: Session, items: Sequence[tuple[Message, Envelope]]) -> None:
        texts = [text_of(event) for event, _ in items]
        self.calls.append(texts)
        rejected = {i: ValueError(f"{t} is bad input") for i, t in enumerate(texts)
                    if t in self.reject}
        if rejected:
            raise RejectedItems(rejected)
        session.execute(
            insert(effects),
            [{"event_id": envelope.event_id, "text": t}
             for (_, envelope), t in zip(items, texts, strict=True)],
        )
        for t in texts:
            if t in self.fail_on:
                raise self.fail_on[t]()


def text_of(event: Message) -> str:
    assert isinstance(event, OrderApproved)
    return event.order_id


@pytest.fixture
def db(event_db: EventDB) -> EventDB:
    effects_metadata.create_all(event_db.engine)
    return event_db


@pytest.fixture
def group() -> str:
    return f"batch-group-{uuid.uuid4().hex[:8]}"


def send_together(
    settings: KafkaSettings, topic: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]
) -> list[int]:
    """Send (value, headers) records in one record batch; return their offsets."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=60_000)
    try:
        futures = [producer.send(topic, key=KEY, value=v, headers=h) for v, h in records]
        producer.flush(timeout=WAIT_S)
        return [f.get(timeout=WAIT_S).offset for f in futures]
    finally:
        producer.close()


def event(text: str, event_id: str | None = None) -> tuple[bytes, list[tuple[str, bytes]]]:
    encoded = encode_event(OrderApproved(order_id=text), KEY, event_id=event_id)
    return encoded.payload, encoded.headers


def new_consumer(
    db: EventDB, settings: KafkaSettings, topic: str, group: str, handler: Any,
    cls: type[BatchEventConsumer] = BatchEventConsumer, **kw: Any,
) -> BatchEventConsumer:
    return cls([topic], group, handler, db.session_factory, settings, registry=REGISTRY, **kw)


def consume(consumer: BatchEventConsumer, records: int) -> None:
    done = 0
    deadline = time.monotonic() + WAIT_S
    while done < records and time.monotonic() < deadline:
        done += consumer.poll_once(0.2)
    assert done >= records, f"consumed {done} of {records} records in {WAIT_S} s"


def effect_texts(db: EventDB) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(select(effects.c.text).order_by(effects.c.id)).scalars())


def inbox_count(db: EventDB) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(InboxRow.__table__)).scalar_one())


def test_duplicates_within_and_across_polls_take_effect_once(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    one, two, three = (str(uuid.uuid4()) for _ in range(3))
    send_together(kafka_settings, topic, [event("one", one), event("two", two), event("one", one)])
    recorder = BatchRecorder()
    with new_consumer(db, kafka_settings, topic, group, recorder) as consumer:
        consume(consumer, 3)
        offsets = send_together(kafka_settings, topic, [event("two", two), event("three", three)])
        consume(consumer, 2)
    assert recorder.calls == [["one", "two"], ["three"]]
    assert effect_texts(db) == ["one", "two", "three"]
    assert inbox_count(db) == 3
    tp = TopicPartition(topic, read_topic(kafka_settings.bootstrap, topic, 5)[0].partition)
    assert committed_offset(kafka_settings.bootstrap, group, tp) == offsets[-1] + 1


def test_bad_records_in_a_batch_are_dead_lettered_and_the_rest_stored_together(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    _, headers = event("x")
    offsets = send_together(
        kafka_settings, topic,
        [event("first"), (b"\x0a\xff", headers), event("bad"), event("last")],
    )
    recorder = BatchRecorder(reject={"bad"})
    with new_consumer(db, kafka_settings, topic, group, recorder) as consumer:
        consume(consumer, 4)
    # Rejected input leaves the batch; the others are handled again, still as one batch.
    assert recorder.calls == [["first", "bad", "last"], ["first", "last"]]
    assert effect_texts(db) == ["first", "last"]
    assert inbox_count(db) == 2
    dead = read_topic(kafka_settings.bootstrap, dead_letter_topic(topic), 2)
    by_offset = {int(headers_dict(r.headers)["dlq-original-offset"]): r for r in dead}
    assert sorted(by_offset) == [offsets[1], offsets[2]]
    assert headers_dict(by_offset[offsets[1]].headers)["dlq-error-type"] == b"BadPayloadError"
    bad = headers_dict(by_offset[offsets[2]].headers)
    assert bad["dlq-error-type"] == b"ValueError"
    assert b"bad is bad input" in bad[HEADER_DLQ_ERROR]
    tp = TopicPartition(topic, dead[0].partition)
    assert committed_offset(kafka_settings.bootstrap, group, tp) == offsets[-1] + 1


def test_a_handler_error_in_a_batch_dead_letters_only_its_record(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    offsets = send_together(
        kafka_settings, topic, [event("before"), event("boom"), event("after")]
    )
    recorder = BatchRecorder(fail_on={"boom": lambda: KeyError("no price for circuit")})
    with new_consumer(db, kafka_settings, topic, group, recorder) as consumer:
        consume(consumer, 3)
    # The batch failed as a whole, then each record was handled on its own.
    assert recorder.calls == [["before", "boom", "after"], ["before"], ["boom"], ["after"]]
    assert effect_texts(db) == ["before", "after"]
    [dead] = read_topic(kafka_settings.bootstrap, dead_letter_topic(topic), 1)
    headers = headers_dict(dead.headers)
    assert headers["dlq-original-offset"] == str(offsets[1]).encode()
    assert headers["dlq-error-type"] == b"KeyError"
    assert b"no price for circuit" in headers[HEADER_DLQ_ERROR]
    tp = TopicPartition(topic, dead.partition)
    assert committed_offset(kafka_settings.bootstrap, group, tp) == offsets[-1] + 1


class CrashBeforeOffsetCommit(BatchEventConsumer):
    def _commit_offsets(self, batches: Any) -> None:
        raise SimulatedCrash("after the database commit, before the offset commit")


def test_crash_between_database_and_offset_commit_redelivers_without_second_effect(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    offsets = send_together(kafka_settings, topic, [event("a"), event("b")])
    first = new_consumer(
        db, kafka_settings, topic, group, BatchRecorder(), CrashBeforeOffsetCommit
    )
    try:
        deadline = time.monotonic() + WAIT_S
        with pytest.raises(SimulatedCrash):
            while time.monotonic() < deadline:
                first.poll_once(0.2)
    finally:
        first.close()
    assert effect_texts(db) == ["a", "b"]  # the transaction committed

    recorder = BatchRecorder()
    with new_consumer(db, kafka_settings, topic, group, recorder) as second:
        consume(second, 2)
    assert recorder.calls == []  # the redelivered batch was absorbed by the inbox
    assert effect_texts(db) == ["a", "b"]
    tp = TopicPartition(topic, read_topic(kafka_settings.bootstrap, topic, 2)[0].partition)
    assert committed_offset(kafka_settings.bootstrap, group, tp) == offsets[-1] + 1


def test_transient_database_errors_are_retried_for_the_whole_batch(
    db: EventDB, kafka_settings: KafkaSettings, topic: str, group: str
) -> None:
    send_together(kafka_settings, topic, [event("p"), event("q")])
    attempts: list[int] = []
    recorder = BatchRecorder()

    def flaky(session: Session, items: Sequence[tuple[Message, Envelope]]) -> None:
        attempts.append(len(items))
        recorder(session, items)  # written, then rolled back by the failure
        if len(attempts) < 3:
            raise sa_exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    with new_consumer(
        db, kafka_settings, topic, group, flaky, transient_retries=3, retry_backoff_s=0.01
    ) as consumer:
        consume(consumer, 2)
    assert attempts == [2, 2, 2]
    assert effect_texts(db) == ["p", "q"]
    assert inbox_count(db) == 2
    assert read_topic(kafka_settings.bootstrap, dead_letter_topic(topic), 0, timeout=0.5) == []
