"""Writing events: one outbox row in the caller's transaction, published later by the relay.

Because the row commits (or rolls back) with the state change that caused it, a crash
between the database commit and the Kafka publish loses nothing: the relay publishes it
after the restart.
"""

from __future__ import annotations

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from services.common.events.envelope import capture_trace_headers, encode_event
from services.common.events.tables import OutboxRow


def add(
    session: Session,
    topic: str,
    key: str | bytes | None,
    message: Message,
    *,
    event_id: str | None = None,
    schema_version: str | None = None,
) -> OutboxRow:
    """Stage ``message`` for ``topic`` inside ``session``'s transaction; returns the row.

    ``key`` is the circuit id (or another partitioning id): events with the same key are
    published in the order they were added. The current OpenTelemetry context is captured
    now, so consumers continue the trace of the operation that wrote the event.
    """
    trace_headers = capture_trace_headers()
    encoded = encode_event(
        message,
        key,
        event_id=event_id,
        schema_version=schema_version,
        trace_headers=trace_headers,
    )
    row = OutboxRow(
        event_id=encoded.event_id,
        topic=topic,
        key=encoded.key,
        event_type=encoded.event_type,
        schema_version=encoded.schema_version,
        payload=encoded.payload,
        headers=trace_headers,
    )
    session.add(row)
    # Flush now so the id (publish order) is taken inside the caller's transaction and a
    # duplicate event id fails here rather than at a distant commit.
    session.flush()
    return row
