"""The event bus: protobuf events on Kafka through a transactional outbox and an
idempotent consumer with an inbox and a dead-letter topic.

Producing: ``outbox.add(session, topic, key, message)`` inside the transaction that changes
state; an :class:`OutboxRelay` publishes the rows. Consuming: an :class:`EventConsumer`
calls ``handler(session, event, envelope)`` once per event id and consumer group; a
:class:`BatchEventConsumer` calls ``handler(session, items)`` once per poll with the events
not handled before.
"""

from services.common.events import outbox
from services.common.events.consumer import (
    BatchEventConsumer,
    BatchHandler,
    EventConsumer,
    Handler,
    RejectedItems,
    TransientError,
    consumer_config,
    is_transient,
)
from services.common.events.envelope import (
    BadPayloadError,
    DecodeError,
    EncodedEvent,
    Envelope,
    EventRegistry,
    MissingHeaderError,
    UnknownEventTypeError,
    decode_record,
    default_registry,
    encode_event,
    event_type_of,
    register_event,
    schema_version_of,
)
from services.common.events.relay import OutboxRelay, producer_config
from services.common.events.tables import (
    InboxRow,
    OutboxRow,
    create_event_tables,
    drop_event_tables,
    event_tables,
)
from services.common.events.topics import dead_letter_topic, ensure_topics

__all__ = [
    "BadPayloadError",
    "BatchEventConsumer",
    "BatchHandler",
    "DecodeError",
    "EncodedEvent",
    "Envelope",
    "EventConsumer",
    "EventRegistry",
    "Handler",
    "InboxRow",
    "MissingHeaderError",
    "OutboxRelay",
    "OutboxRow",
    "RejectedItems",
    "TransientError",
    "UnknownEventTypeError",
    "consumer_config",
    "create_event_tables",
    "dead_letter_topic",
    "decode_record",
    "default_registry",
    "drop_event_tables",
    "encode_event",
    "ensure_topics",
    "event_tables",
    "event_type_of",
    "is_transient",
    "outbox",
    "producer_config",
    "register_event",
    "schema_version_of",
]
