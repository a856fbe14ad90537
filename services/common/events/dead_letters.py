"""Reading a dead-letter topic: a short-lived KafkaConsumer with no group (assign + seek).

No group means nothing is committed and no consumer of the topic is disturbed. A read ends
when nothing more arrives for ``idle_s`` (``first_wait_s`` before the first record: the
first fetch of a new consumer takes longer) or at ``deadline_s``, whichever is first: the
broker's end offsets are not used (on Tansu they did not match what was produced, see
DEVSTACK.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from services.common.config import KafkaSettings
from services.common.errors import NotFound, Unavailable
from services.common.events.admin import RawRecord
from services.common.events.connection import connection_config

# Records read at most to list a topic (sorted oldest first, then cut to the page).
MAX_RECORDS = 10_000


def _raw(record: Any) -> RawRecord:
    return RawRecord(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        headers=tuple((name, value or b"") for name, value in record.headers or ()),
        timestamp_ms=record.timestamp,
    )


class KafkaDeadLetterSource:
    def __init__(
        self, settings: KafkaSettings, *, deadline_s: float = 10.0, idle_s: float = 0.5,
        first_wait_s: float = 2.0,
    ) -> None:
        self._settings = settings
        self._deadline_s = deadline_s
        self._idle_s = idle_s
        self._first_wait_s = first_wait_s

    @contextmanager
    def _consumer(self) -> Iterator[KafkaConsumer]:
        try:
            consumer = KafkaConsumer(**connection_config(
                self._settings,
                group_id=None,
                enable_auto_commit=False,
                allow_auto_create_topics=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=min(self._settings.fetch_max_wait_ms, 100),
                request_timeout_ms=self._settings.request_timeout_ms,
                client_id="idc-event-admin",
            ))
        except Exception as exc:
            raise Unavailable(f"cannot reach the broker at {self._settings.bootstrap}: {exc}") \
                from exc
        try:
            yield consumer
        finally:
            consumer.close(autocommit=False)

    def partitions(self, topic: str) -> set[int]:
        with self._consumer() as consumer:
            return self._partitions(consumer, topic)

    @staticmethod
    def _partitions(consumer: KafkaConsumer, topic: str) -> set[int]:
        found = consumer.partitions_for_topic(topic)
        if not found:
            raise NotFound(f"the broker has no topic {topic}")
        return set(found)

    def read_all(self, topic: str) -> list[RawRecord]:
        with self._consumer() as consumer:
            partitions = self._partitions(consumer, topic)
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            consumer.seek_to_beginning()
            records: list[RawRecord] = []
            for batch in self._polls(consumer):
                records += [_raw(r) for r in batch]
                if len(records) >= MAX_RECORDS:
                    break
        records.sort(key=lambda r: (r.timestamp_ms or 0, r.partition, r.offset))
        return records

    def read_one(self, topic: str, partition: int, offset: int) -> RawRecord | None:
        with self._consumer() as consumer:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            for batch in self._polls(consumer):
                for record in batch:
                    if record.offset == offset:
                        return _raw(record)
                    if record.offset > offset:
                        # Deleted by retention, or an offset reset past it.
                        return None
        return None

    def _polls(self, consumer: KafkaConsumer) -> Iterator[list[Any]]:
        """The polled records, batch by batch, until idle or the deadline."""
        deadline = time.monotonic() + self._deadline_s
        idle_since = time.monotonic()
        idle_s = self._first_wait_s
        while True:
            now = time.monotonic()
            if now >= deadline or now - idle_since >= idle_s:
                return
            polled = consumer.poll(timeout_ms=100)
            batch = [record for records in polled.values() for record in records]
            if batch:
                idle_since, idle_s = time.monotonic(), self._idle_s
                yield batch
