"""What an event looks like on Kafka: protobuf value, circuit-id key, typed headers.

Headers on every record:

* ``event-id``        a UUID; consumers deduplicate on it (the inbox);
* ``event-type``      the protobuf full name, e.g. ``idc.events.v1.OrderApproved``;
* ``schema-version``  the contract version the producer wrote;
* ``traceparent``     W3C trace context of the business operation that wrote the event
  (plus ``tracestate``/``baggage`` when the configured propagator emits them).

A :class:`EventRegistry` maps event types back to message classes on the consumer side.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry import propagate
from opentelemetry.context import Context

HEADER_EVENT_ID = "event-id"
HEADER_EVENT_TYPE = "event-type"
HEADER_SCHEMA_VERSION = "schema-version"
HEADER_TRACEPARENT = "traceparent"
REQUIRED_HEADERS = (HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION)

DEFAULT_SCHEMA_VERSION = "1"
# Contract convention (idc.events.v1): a payload's own event id, equal to the header.
EVENT_ID_FIELD = "event_id"

M = TypeVar("M", bound=type[Message])

# A package component such as "v1" or "v2beta1" carries the contract's major version.
_VERSION_COMPONENT = re.compile(r"^v(\d+)")

Headers = Sequence[tuple[str, bytes]]


class DecodeError(Exception):
    """A record cannot be turned into an event; it belongs on the dead-letter topic."""


class MissingHeaderError(DecodeError):
    pass


class UnknownEventTypeError(DecodeError):
    pass


class BadPayloadError(DecodeError):
    pass


def event_type_of(message: Message | type[Message]) -> str:
    """The protobuf full name, which is the ``event-type`` header."""
    return str(message.DESCRIPTOR.full_name)


def schema_version_of(message: Message | type[Message]) -> str:
    """Major version from the package (``idc.events.v1`` -> ``"1"``), else the default."""
    package = str(message.DESCRIPTOR.file.package)
    for part in reversed(package.split(".")):
        match = _VERSION_COMPONENT.match(part)
        if match:
            return match.group(1)
    return DEFAULT_SCHEMA_VERSION


class EventRegistry:
    """Maps ``event-type`` to the message class that decodes it."""

    def __init__(self, classes: Iterable[type[Message]] = ()) -> None:
        self._classes: dict[str, type[Message]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: M) -> M:
        """Register a message class (usable as a decorator); re-registering is a no-op."""
        name = event_type_of(cls)
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"event type {name} is already registered to {known!r}")
        self._classes[name] = cls
        return cls

    def get(self, event_type: str) -> type[Message] | None:
        return self._classes.get(event_type)

    def resolve(self, event_type: str) -> type[Message]:
        cls = self._classes.get(event_type)
        if cls is None:
            raise UnknownEventTypeError(f"unknown event type {event_type!r}")
        return cls

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._classes

    def event_types(self) -> list[str]:
        return sorted(self._classes)


default_registry = EventRegistry()
"""The process-wide registry; services register their event classes at import time."""


def register_event(cls: M) -> M:
    return default_registry.register(cls)


def capture_trace_headers(context: Context | None = None) -> dict[str, str]:
    """Inject the current (or given) OpenTelemetry context with the global propagator."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def extract_trace_context(headers: Mapping[str, bytes]) -> Context:
    """The context a consumer's span should continue, from a record's headers."""
    carrier = {name: value.decode("latin-1") for name, value in headers.items()}
    return propagate.extract(carrier)


def encode_key(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode("utf-8")


def build_headers(
    event_id: str,
    event_type: str,
    schema_version: str,
    extra: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    headers = [
        (HEADER_EVENT_ID, event_id.encode("ascii")),
        (HEADER_EVENT_TYPE, event_type.encode("utf-8")),
        (HEADER_SCHEMA_VERSION, schema_version.encode("utf-8")),
    ]
    for name, value in (extra or {}).items():
        if name not in REQUIRED_HEADERS:
            headers.append((name, value.encode("utf-8")))
    return headers


@dataclass(frozen=True)
class EncodedEvent:
    """A message ready to be sent: what the outbox stores and the relay publishes."""

    event_id: str
    event_type: str
    schema_version: str
    key: bytes | None
    payload: bytes
    headers: list[tuple[str, bytes]]


def encode_event(
    message: Message,
    key: str | bytes | None,
    *,
    event_id: str | None = None,
    schema_version: str | None = None,
    trace_headers: Mapping[str, str] | None = None,
) -> EncodedEvent:
    """Serialize ``message`` with its headers; trace headers default to the current context.

    The event id is, in order: ``event_id``, the message's own ``event_id`` field, a new
    UUID. A message with an empty ``event_id`` field is sent with it filled in (on a copy),
    so the header and the payload always agree.
    """
    eid, message = _with_event_id(message, event_id)
    etype = event_type_of(message)
    version = schema_version or schema_version_of(message)
    trace = capture_trace_headers() if trace_headers is None else dict(trace_headers)
    return EncodedEvent(
        event_id=eid,
        event_type=etype,
        schema_version=version,
        key=encode_key(key),
        payload=message.SerializeToString(),
        headers=build_headers(eid, etype, version, trace),
    )


def _with_event_id(message: Message, event_id: str | None) -> tuple[str, Message]:
    field_ = message.DESCRIPTOR.fields_by_name.get(EVENT_ID_FIELD)
    if field_ is None or field_.type != field_.TYPE_STRING:
        return event_id or str(uuid.uuid4()), message
    own = str(getattr(message, EVENT_ID_FIELD))
    if own and event_id and own != event_id:
        raise ValueError(f"event_id {event_id!r} differs from the message's {own!r}")
    eid = own or event_id or str(uuid.uuid4())
    if not own:
        filled = type(message)()
        filled.CopyFrom(message)
        setattr(filled, EVENT_ID_FIELD, eid)
        message = filled
    return eid, message


@dataclass(frozen=True)
class Envelope:
    """Everything about a consumed record except the decoded event itself."""

    event_id: str
    event_type: str
    schema_version: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int | None
    headers: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def traceparent(self) -> str | None:
        raw = self.headers.get(HEADER_TRACEPARENT)
        return None if raw is None else raw.decode("latin-1")

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", errors="replace")


def headers_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Record headers as a dict; for a repeated name the last value wins."""
    return {name: value or b"" for name, value in headers or ()}


def decode_record(record: Any, registry: EventRegistry) -> tuple[Message, Envelope]:
    """Decode a kafka-python ``ConsumerRecord`` (or anything with the same attributes).

    Raises a :class:`DecodeError` subclass for missing headers, an unknown event type or a
    payload that does not parse.
    """
    headers = headers_dict(record.headers)
    values: dict[str, str] = {}
    for name in REQUIRED_HEADERS:
        raw = headers.get(name)
        if not raw:
            raise MissingHeaderError(f"missing header {name!r}")
        try:
            values[name] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MissingHeaderError(f"header {name!r} is not UTF-8") from exc
    cls = registry.resolve(values[HEADER_EVENT_TYPE])
    message = cls()
    try:
        message.ParseFromString(record.value or b"")
    except ProtobufDecodeError as exc:
        raise BadPayloadError(
            f"payload does not parse as {values[HEADER_EVENT_TYPE]}: {exc}"
        ) from exc
    envelope = Envelope(
        event_id=values[HEADER_EVENT_ID],
        event_type=values[HEADER_EVENT_TYPE],
        schema_version=values[HEADER_SCHEMA_VERSION],
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        timestamp_ms=record.timestamp,
        headers=headers,
    )
    return message, envelope
