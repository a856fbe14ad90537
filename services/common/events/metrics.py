"""Readings of the event bus for the metrics endpoint: the outbox backlog, consumer lag.

Both are read when Prometheus scrapes, from the database and from the broker, not from
what the relay or the consumer last saw: a relay or a consumer that is stuck stops
updating its own view, and that is the case the alerts are for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.common import metric_catalogue as catalogue
from services.common.config import KafkaSettings
from services.common.events.connection import connection_config
from services.common.events.tables import OutboxRow, utcnow
from services.common.metrics import Reading, Registration, observe, one
from services.common.timestamps import as_utc

log = logging.getLogger(__name__)

_GROUP = "messaging.consumer.group.name"
_TOPIC = "messaging.destination.name"
_PARTITION = "messaging.destination.partition.id"



class OutboxBacklog:
    """Unsent outbox rows and the age of the oldest, from one database."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def read(self) -> tuple[int, float]:
        with self._session_factory() as session:
            count, oldest = session.execute(
                select(func.count(OutboxRow.id), func.min(OutboxRow.created_at)).where(
                    OutboxRow.sent_at.is_(None)
                )
            ).one()
        age = 0.0 if oldest is None else (utcnow() - as_utc(oldest)).total_seconds()
        return int(count), max(age, 0.0)

    def register(self) -> list[Registration]:
        return [
            observe(catalogue.OUTBOX_BACKLOG, lambda: one(self.read()[0])),
            observe(catalogue.OUTBOX_OLDEST_AGE, lambda: one(self.read()[1])),
        ]


class ConsumerLag:
    """Per partition of ``topics``: the broker's end offset minus what ``group`` committed.

    A partition the group has never committed counts from its earliest offset. The admin
    client is made at the first scrape and kept; a broker that does not answer within the
    request timeout yields no reading (and a log line), not a stale one.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: Iterable[str],
        admin_factory: Callable[[], KafkaAdminClient] | None = None,
    ) -> None:
        self._settings = settings
        self.group_id = group_id
        self.topics = list(topics)
        self._admin_factory = admin_factory or self._new_admin
        self._admin: KafkaAdminClient | None = None
        self._lock = threading.Lock()

    def _new_admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(**connection_config(
            self._settings,
            request_timeout_ms=self._settings.request_timeout_ms,
            client_id=f"{self.group_id}-lag",
        ))

    def read(self) -> list[Reading]:
        with self._lock:
            try:
                return self._read()
            except Exception:
                self._close_admin()
                raise

    def _read(self) -> list[Reading]:
        if self._admin is None:
            self._admin = self._admin_factory()
        admin = self._admin
        partitions = self._partitions(admin)
        if not partitions:
            return []
        latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
        earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in partitions})
        committed = admin.list_group_offsets(self.group_id).get(self.group_id, {})
        readings = []
        for tp in partitions:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else None
            start = earliest[tp].offset if position is None else position
            readings.append(
                Reading(
                    max(latest[tp].offset - start, 0),
                    {_GROUP: self.group_id, _TOPIC: tp.topic, _PARTITION: tp.partition},
                )
            )
        return readings

    def _partitions(self, admin: KafkaAdminClient) -> list[TopicPartition]:
        topics = admin.describe_topics(self.topics)
        return sorted(
            TopicPartition(topic["name"], partition["partition_index"])
            for topic in topics
            for partition in topic.get("partitions", [])
        )

    def _close_admin(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:
                log.debug("closing the lag admin client raised", exc_info=True)
            self._admin = None

    def register(self) -> Registration:
        return observe(catalogue.CONSUMER_LAG, self.read)

    def close(self) -> None:
        with self._lock:
            self._close_admin()
