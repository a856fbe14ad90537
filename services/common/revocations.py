"""Every service process's copy of the revoked tokens, read from ``idc.token.revocations``.

A broadcast reader: a KafkaConsumer with no group that assigns itself every partition and
reads from the beginning at start, so every process sees every revocation (a consumer
group would share them out). Nothing is committed. Records older than the topic's
retention (at least the maximum token lifetime) concern tokens that expired anyway.

Freshness: about once a second it asks the broker for the partitions' end offsets; when
its position has reached them it is caught up. When it has not been caught up for longer
than ``IDC_TOKEN_REVOCATION_STALE_S`` (the broker unreachable, the reader stuck) the alarm
``idc.alarm.token-revocations-stale`` is raised; the gauge ``idc.token.revocations.lag``
shows that time at every scrape. Tokens are still accepted meanwhile (fail open, see README
"Tokens"). On Tansu the end offsets can lag behind what was produced
(DEVSTACK.md), which can only make the reader look caught up a little early, never late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from idc.events.v1 import token_pb2
from services.common import metric_catalogue as catalogue
from services.common.config import KafkaSettings
from services.common.events.connection import connection_config
from services.common.events.envelope import DecodeError, EventRegistry, decode_record
from services.common.events.topics import TOKEN_REVOCATIONS
from services.common.grpc_server import AlarmCheck, Worker
from services.common.metrics import Reading, Registration, observe, one
from services.common.tokens import RevokedTokens

log = logging.getLogger(__name__)

REGISTRY = EventRegistry([token_pb2.TokenRevoked])
# How often the reader compares its position with the partitions' end offsets.
CHECK_INTERVAL_S = 1.0
POLL_TIMEOUT_MS = 200
# The reader's broker wait per fetch: a revocation may take this long to arrive (inside the
# stated 2 s), and an idle reader costs a few fetches a second instead of the dozens a
# low IDC_KAFKA_FETCH_MAX_WAIT_MS (tuned for the event consumers' latency) would make.
FETCH_MAX_WAIT_MS = 500


class RevocationReader(Worker):
    name = "token-revocations"

    def __init__(self, revoked: RevokedTokens, kafka: KafkaSettings, stale_s: float,
                 topic: str = TOKEN_REVOCATIONS) -> None:
        self._revoked = revoked
        self._kafka = kafka
        self._stale_s = stale_s
        self._topic = topic
        self._started = time.monotonic()
        self._caught_up_at: float | None = None
        self._caught_up = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._gauge: Registration | None = None

    def alarms(self) -> dict[str, AlarmCheck]:
        return {"token-revocations-stale": self._stale}

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once the reader has reached the topic's end at least once (tests, start)."""
        return self._caught_up.wait(timeout_s)

    def behind_s(self) -> float:
        """Seconds since the reader was last caught up (since its start if never)."""
        since = self._caught_up_at if self._caught_up_at is not None else self._started
        return time.monotonic() - since

    def _lag(self) -> list[Reading]:
        return one(self.behind_s())

    def _stale(self) -> Sequence[str]:
        behind = self.behind_s()
        if behind <= self._stale_s:
            return []
        what = "not caught up" if self._caught_up_at is not None else "never caught up"
        return [f"the token revocation list has {what} with {self._topic} for {behind:.0f} s "
                f"(bound {self._stale_s:.0f} s): a token revoked meanwhile may still be "
                "accepted here"]

    def run(self, stop: threading.Event) -> None:
        self._gauge = observe(catalogue.TOKEN_REVOCATIONS_LAG, self._lag)
        while not stop.is_set():
            try:
                self._read(stop)
            except Exception as exc:
                # A broker that is down or restarted: start over from the beginning (a
                # broker that lost its data lost the revocations too; the set keeps them).
                log.warning("token revocation reader restarts: %s", exc)
                self._close()
                stop.wait(CHECK_INTERVAL_S)

    def _read(self, stop: threading.Event) -> None:
        consumer = self._consumer = KafkaConsumer(**connection_config(
            self._kafka,
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=max(self._kafka.fetch_max_wait_ms, FETCH_MAX_WAIT_MS),
            request_timeout_ms=self._kafka.request_timeout_ms,
            client_id="idc-token-revocations",
        ))
        assigned: set[TopicPartition] = set()
        next_check = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_check:
                assigned = self._assign(consumer, assigned)
                self._check_caught_up(consumer, assigned)
                next_check = time.monotonic() + CHECK_INTERVAL_S
            if not assigned:
                stop.wait(CHECK_INTERVAL_S)
                continue
            for records in consumer.poll(timeout_ms=POLL_TIMEOUT_MS).values():
                for record in records:
                    self._handle(record)

    def _assign(self, consumer: KafkaConsumer, assigned: set[TopicPartition]
                ) -> set[TopicPartition]:
        partitions = consumer.partitions_for_topic(self._topic) or set()
        wanted = {TopicPartition(self._topic, p) for p in partitions}
        if wanted != assigned:
            consumer.assign(sorted(wanted))
            new = sorted(wanted - assigned)
            if new:
                consumer.seek_to_beginning(*new)
        return wanted

    def _check_caught_up(self, consumer: KafkaConsumer, assigned: set[TopicPartition]) -> None:
        if not assigned:
            return
        # A broker round trip: raises when the broker does not answer.
        ends = consumer.end_offsets(sorted(assigned))
        if all(consumer.position(tp) >= (ends.get(tp) or 0) for tp in assigned):
            self._caught_up_at = time.monotonic()
            self._caught_up.set()

    def _handle(self, record: Any) -> None:
        try:
            event, _ = decode_record(record, REGISTRY)
        except DecodeError as exc:
            log.warning("skipped record %s:%d in %s: %s", record.partition, record.offset,
                        self._topic, exc)
            return
        assert isinstance(event, token_pb2.TokenRevoked)
        self._revoked.add(event.token_id, event.revoke_time.ToMicroseconds() / 1e6,
                          event.expire_time.ToMicroseconds() / 1e6)
        log.info("token %s revoked from %s", event.token_id,
                 event.revoke_time.ToDatetime().isoformat())

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # closing a consumer of a vanished broker
                log.debug("closing the revocation reader: %s", exc)
            self._consumer = None

    def close(self) -> None:
        if self._gauge is not None:
            self._gauge.cancel()
        self._close()
