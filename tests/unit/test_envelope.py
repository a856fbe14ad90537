"""Envelope: headers, trace context, registry and decoding, without a broker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    wrappers_pb2,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_trace_id, get_current_span

from idc.events.v1.order_pb2 import OrderApproved
from services.common.events.envelope import (
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    HEADER_SCHEMA_VERSION,
    HEADER_TRACEPARENT,
    BadPayloadError,
    EventRegistry,
    MissingHeaderError,
    UnknownEventTypeError,
    decode_record,
    encode_event,
    event_type_of,
    extract_trace_context,
    headers_dict,
    schema_version_of,
)


@dataclass
class FakeRecord:
    """The attributes of kafka-python's ConsumerRecord that decoding reads."""

    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    key: bytes | None = b"circuit-1"
    topic: str = "idc.test"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_000


def registry() -> EventRegistry:
    return EventRegistry([wrappers_pb2.StringValue, struct_pb2.Struct])


def test_event_type_is_protobuf_full_name() -> None:
    assert event_type_of(wrappers_pb2.StringValue) == "google.protobuf.StringValue"
    assert event_type_of(struct_pb2.Struct()) == "google.protobuf.Struct"


def test_schema_version_defaults_without_versioned_package() -> None:
    assert schema_version_of(wrappers_pb2.StringValue) == "1"


def test_encode_sets_headers_and_key() -> None:
    event_id = str(uuid.uuid4())
    encoded = encode_event(
        wrappers_pb2.StringValue(value="hello"), "circuit-7", event_id=event_id, trace_headers={}
    )
    headers = headers_dict(encoded.headers)
    assert headers[HEADER_EVENT_ID] == event_id.encode()
    assert headers[HEADER_EVENT_TYPE] == b"google.protobuf.StringValue"
    assert headers[HEADER_SCHEMA_VERSION] == b"1"
    assert HEADER_TRACEPARENT not in headers
    assert encoded.key == b"circuit-7"
    assert wrappers_pb2.StringValue.FromString(encoded.payload).value == "hello"


def test_encode_generates_unique_event_ids() -> None:
    a = encode_event(wrappers_pb2.StringValue(), None, trace_headers={})
    b = encode_event(wrappers_pb2.StringValue(), None, trace_headers={})
    assert a.event_id != b.event_id
    uuid.UUID(a.event_id)


def test_traceparent_is_taken_from_current_span_and_extracted_back() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("write") as span:
        encoded = encode_event(wrappers_pb2.StringValue(value="x"), b"k")
    trace_id = format_trace_id(span.get_span_context().trace_id)
    headers = headers_dict(encoded.headers)
    assert headers[HEADER_TRACEPARENT].decode().startswith(f"00-{trace_id}-")
    restored = get_current_span(extract_trace_context(headers)).get_span_context()
    assert restored.trace_id == span.get_span_context().trace_id
    assert restored.span_id == span.get_span_context().span_id


def test_roundtrip_decode() -> None:
    message = struct_pb2.Struct()
    message.update({"circuit": "c-1", "cir_mbps": 100})
    encoded = encode_event(message, "c-1", trace_headers={})
    record = FakeRecord(value=encoded.payload, headers=encoded.headers, key=encoded.key)
    event, envelope = decode_record(record, registry())
    assert event == message
    assert envelope.event_id == encoded.event_id
    assert envelope.event_type == "google.protobuf.Struct"
    assert (envelope.topic, envelope.partition, envelope.offset) == ("idc.test", 2, 41)
    assert envelope.key_text == "c-1"
    assert envelope.traceparent is None


@pytest.mark.parametrize("missing", [HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION])
def test_missing_header_is_a_decode_error(missing: str) -> None:
    encoded = encode_event(wrappers_pb2.StringValue(value="x"), b"k", trace_headers={})
    headers = [(n, v) for n, v in encoded.headers if n != missing]
    with pytest.raises(MissingHeaderError, match=missing):
        decode_record(FakeRecord(value=encoded.payload, headers=headers), registry())


def test_unknown_event_type_is_a_decode_error() -> None:
    encoded = encode_event(wrappers_pb2.Int64Value(value=3), b"k", trace_headers={})
    with pytest.raises(UnknownEventTypeError, match=r"google\.protobuf\.Int64Value"):
        decode_record(FakeRecord(value=encoded.payload, headers=encoded.headers), registry())


def test_garbage_payload_is_a_decode_error() -> None:
    encoded = encode_event(wrappers_pb2.StringValue(value="x"), b"k", trace_headers={})
    # Field 1, length-delimited, claiming 255 bytes that are not there.
    with pytest.raises(BadPayloadError):
        decode_record(FakeRecord(value=b"\x0a\xff", headers=encoded.headers), registry())


def test_registry_refuses_a_second_class_for_one_type() -> None:
    reg = registry()
    reg.register(wrappers_pb2.StringValue)  # the same class again is fine

    # Another class with the same full name, from a separate descriptor pool.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(
        descriptor_pb2.FileDescriptorProto(
            name="impostor.proto",
            package="google.protobuf",
            message_type=[descriptor_pb2.DescriptorProto(name="StringValue")],
        )
    )
    impostor = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.protobuf.StringValue")
    )
    with pytest.raises(ValueError, match="already registered"):
        reg.register(impostor)
    assert "google.protobuf.StringValue" in reg
    assert reg.event_types() == ["google.protobuf.StringValue", "google.protobuf.Struct"]


def test_event_id_comes_from_and_goes_into_the_payload() -> None:
    own = OrderApproved(event_id="11111111-2222-3333-4444-555555555555", order_id="o-1")
    encoded = encode_event(own, "c-1", trace_headers={})
    assert encoded.event_id == own.event_id

    blank = OrderApproved(order_id="o-2")
    encoded = encode_event(blank, "c-1", trace_headers={})
    assert OrderApproved.FromString(encoded.payload).event_id == encoded.event_id
    assert blank.event_id == ""  # the caller's message is not modified

    with pytest.raises(ValueError, match="differs"):
        encode_event(own, "c-1", event_id=str(uuid.uuid4()), trace_headers={})


def test_idc_event_schema_version_and_type() -> None:
    assert event_type_of(OrderApproved) == "idc.events.v1.OrderApproved"
    assert schema_version_of(OrderApproved) == "1"
