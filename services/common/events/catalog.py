"""Registries of the event types each shared topic carries.

A consumer decodes everything its topic may carry and ignores what is not for it: an event
type it did not expect is not poison and must not go to the dead-letter topic.
"""

from __future__ import annotations

from types import ModuleType

from google.protobuf.message import Message

from idc.events.v1 import circuit_pb2, provisioning_pb2
from services.common.events.envelope import EventRegistry


def messages_of(*modules: ModuleType) -> list[type[Message]]:
    """Every top-level message class of the given generated modules."""
    return [
        getattr(module, name)
        for module in modules
        for name in module.DESCRIPTOR.message_types_by_name
    ]


def circuit_topic_registry() -> EventRegistry:
    """idc.circuit.events: lifecycle outcomes and provisioning plans."""
    return EventRegistry(messages_of(circuit_pb2, provisioning_pb2))
