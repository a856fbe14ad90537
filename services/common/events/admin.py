"""Tools for lost and poisoned events: the use cases behind ``idcctl ops dlq`` and
``idcctl ops outbox``, with the dead-letter topic and the service database behind ports.

* A dead letter is a record on ``<topic>.dlq`` (services/common/events/consumer.py wrote it
  with ``dlq-*`` headers), named by its partition and offset there.
* A replay writes it to this service's outbox for its original topic, keeping its event id:
  the consumer group that dead-lettered it handles it, groups that handled it before skip it
  (their inbox), and a second replay of the same dead letter is refused.
* Republishing marks outbox rows already sent as unsent, for a broker that lost them; the
  relay publishes them again with their event ids, and the inboxes absorb what was had.

Only admin principals use them: the topics carry both telcos' events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.events.consumer import (
    DLQ_HEADERS,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_ERROR_TYPE,
    HEADER_DLQ_FAILED_AT,
    HEADER_DLQ_GROUP,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_TOPIC,
)
from services.common.events.envelope import (
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    HEADER_SCHEMA_VERSION,
    REQUIRED_HEADERS,
    headers_dict,
)
from services.common.events.tables import utcnow
from services.common.events.topics import DLQ_SUFFIX, dead_letter_topic
from services.common.paging import checked, page_of, page_request

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A republish names at most this many of the rows it marked.
MAX_NAMED_EVENTS = 1000

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class DeadLetterRef:
    """Where a dead letter is: its original topic, and partition and offset in ``.dlq``."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{dead_letter_topic(self.topic)} {self.partition}:{self.offset}"


@dataclass(frozen=True)
class RawRecord:
    """A record as read from a dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Replay:
    replay_id: str
    event_id: str
    actor: str
    replayed_at: datetime
    ref: DeadLetterRef


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter with what the consumer that wrote it said about it."""

    ref: DeadLetterRef
    original_topic: str
    original_partition: int
    original_offset: int
    consumer_group: str
    error_type: str
    error: str
    failed_at: datetime | None
    event_id: str
    event_type: str
    schema_version: str
    key: bytes | None
    value: bytes
    # The record's own headers, without the dlq-* ones.
    headers: Headers
    replays: tuple[Replay, ...] = ()

    @classmethod
    def from_record(cls, topic: str, record: RawRecord) -> DeadLetter:
        found = headers_dict(record.headers)

        def text(name: str) -> str:
            return found.get(name, b"").decode("utf-8", errors="replace")

        return cls(
            ref=DeadLetterRef(topic, record.partition, record.offset),
            original_topic=text(HEADER_DLQ_TOPIC) or topic,
            original_partition=_int(text(HEADER_DLQ_PARTITION)),
            original_offset=_int(text(HEADER_DLQ_OFFSET)),
            consumer_group=text(HEADER_DLQ_GROUP),
            error_type=text(HEADER_DLQ_ERROR_TYPE),
            error=text(HEADER_DLQ_ERROR),
            failed_at=_time(text(HEADER_DLQ_FAILED_AT)),
            event_id=text(HEADER_EVENT_ID),
            event_type=text(HEADER_EVENT_TYPE),
            schema_version=text(HEADER_SCHEMA_VERSION),
            key=record.key,
            value=record.value,
            headers=tuple((n, v) for n, v in record.headers if n not in DLQ_HEADERS),
        )


def _int(raw: str) -> int:
    return int(raw) if raw.lstrip("-").isdigit() else -1


def _time(raw: str) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetterPage:
    dead_letters: list[DeadLetter]
    next_page_token: str


@dataclass(frozen=True)
class SentWindow:
    since: datetime
    until: datetime


@dataclass(frozen=True)
class RepublishRequest:
    """A window of send times (``since``, optional ``until``) or one ``event_id``."""

    since: datetime | None = None
    until: datetime | None = None
    event_id: str = ""


@dataclass(frozen=True)
class Republished:
    count: int
    event_ids: list[str] = field(default_factory=list)


def _position(record: RawRecord) -> tuple[int, int, int]:
    """Where a dead letter sorts, oldest first; the page token carries the last one's."""
    return (record.timestamp_ms or 0, record.partition, record.offset)


class DeadLetterSource(Protocol):
    """Reads dead-letter topics; NotFound for a topic the broker does not have."""

    def partitions(self, topic: str) -> set[int]: ...

    def read_all(self, topic: str) -> list[RawRecord]:
        """The records of ``topic`` (a bounded number), by timestamp, partition and offset."""
        ...

    def read_one(self, topic: str, partition: int, offset: int) -> RawRecord | None: ...


class EventStore(Protocol):
    """The service database: its outbox and its record of replays."""

    def replays_of(self, refs: Sequence[DeadLetterRef]) -> dict[DeadLetterRef, list[Replay]]: ...

    def replay(self, dead: DeadLetter, actor: str, now: datetime) -> Replay: ...

    def republish_window(self, window: SentWindow) -> list[str]: ...

    def republish_event(self, event_id: str) -> list[str]: ...


def original_topic(raw: str) -> str:
    """The topic a caller named; the dead-letter topic's name is accepted too."""
    topic = raw.strip().removesuffix(DLQ_SUFFIX)
    if not topic:
        raise InvalidArgument.for_field("topic", "name the topic, e.g. idc.order.events")
    return topic


class EventAdmin:
    def __init__(
        self, source: DeadLetterSource, store: EventStore,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._source = source
        self._store = store
        self._clock = clock

    def list_dead_letters(
        self, topic: str, page_size: int = 0, page_token: str = ""
    ) -> DeadLetterPage:
        topic = original_topic(topic)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument.for_field(
                "page_size", f"give 1 to {MAX_PAGE_SIZE} (or 0 for {DEFAULT_PAGE_SIZE})"
            )
        page = page_request(page_size, page_token, default=DEFAULT_PAGE_SIZE,
                            maximum=MAX_PAGE_SIZE)
        start = None if page.after is None else checked(page.after, int, int, int)
        records, next_page_token = page_of(
            [r for r in self._source.read_all(dead_letter_topic(topic))
             if start is None or _position(r) > start], page, _position)
        letters = [DeadLetter.from_record(topic, record) for record in records]
        return DeadLetterPage(self._with_replays(letters), next_page_token)

    def get_dead_letter(self, ref: DeadLetterRef) -> DeadLetter:
        ref = self._checked(ref)
        record = self._source.read_one(dead_letter_topic(ref.topic), ref.partition, ref.offset)
        if record is None:
            raise NotFound(f"no dead letter at {ref}: `idcctl ops dlq list {ref.topic}` shows "
                           "the dead letters there")
        return self._with_replays([DeadLetter.from_record(ref.topic, record)])[0]

    def replay(self, ref: DeadLetterRef, actor: str) -> Replay:
        dead = self.get_dead_letter(ref)
        missing = [
            name for name, value in zip(
                REQUIRED_HEADERS, (dead.event_id, dead.event_type, dead.schema_version),
                strict=True,
            ) if not value
        ]
        if missing:
            raise FailedPrecondition(
                f"dead letter {ref} has no {', '.join(missing)} header: consumers would "
                "refuse it again and could not deduplicate it, so it is not replayed"
            )
        try:
            self._source.partitions(dead.original_topic)
        except NotFound:
            raise FailedPrecondition(
                f"dead letter {ref} came from topic {dead.original_topic}, which the broker "
                "does not have"
            ) from None
        replay = self._store.replay(dead, actor, self._clock())
        log.info("%s replayed dead letter %s (event %s) as outbox row %s",
                 actor, ref, dead.event_id, replay.replay_id)
        return replay

    def republish(self, request: RepublishRequest, actor: str) -> Republished:
        if request.event_id and (request.since or request.until):
            raise InvalidArgument.for_field(
                "event_id", "give either an event id or a --since/--until window, not both"
            )
        if request.event_id:
            ids = self._store.republish_event(request.event_id.strip())
        elif request.since is None:
            raise InvalidArgument.for_field(
                "since", "give --since (and optionally --until) or --event-id: which rows "
                "to send again"
            )
        else:
            until = request.until or self._clock()
            if request.since >= until:
                raise InvalidArgument.for_field(
                    "since", f"--since {request.since.isoformat()} is not before --until "
                    f"{until.isoformat()}"
                )
            ids = self._store.republish_window(SentWindow(request.since, until))
        log.info("%s marked %d outbox rows to be published again", actor, len(ids))
        return Republished(len(ids), ids[:MAX_NAMED_EVENTS])

    def _checked(self, ref: DeadLetterRef) -> DeadLetterRef:
        ref = replace(ref, topic=original_topic(ref.topic))
        if ref.offset < 0:
            raise InvalidArgument.for_field("offset", "an offset is 0 or more")
        partitions = self._source.partitions(dead_letter_topic(ref.topic))
        if ref.partition not in partitions:
            raise NotFound(
                f"{dead_letter_topic(ref.topic)} has no partition {ref.partition} "
                f"(it has {', '.join(map(str, sorted(partitions)))})"
            )
        return ref

    def _with_replays(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        replays = self._store.replays_of([letter.ref for letter in letters])
        return [
            replace(letter, replays=tuple(
                r for r in replays.get(letter.ref, []) if r.event_id == letter.event_id
            ))
            for letter in letters
        ]
