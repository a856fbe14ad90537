"""Helpers for the billing integration tests: a migrated database, events, a fixed clock."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaProducer
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, common_pb2, usage_pb2
from idc.type.v1 import money_pb2
from services.billing.domain.ends import Side, billed_side
from services.billing.domain.entities import BillingDirectory, parse_directory
from services.billing.ingest import ContractIngest, UsageIngest
from services.common import db
from services.common.config import KafkaSettings
from services.common.events import encode_event
from services.common.events.envelope import Envelope
from services.common.events.relay import producer_config

MIGRATIONS = Path(__file__).parents[3] / "services" / "billing" / "migrations"
ENTITIES = Path(__file__).parents[3] / "services" / "billing" / "data" / "billing_entities.toml"


def migrated(url: str) -> sessionmaker[Session]:
    db.migrate(url, MIGRATIONS)
    return db.make_session_factory(db.make_engine(url))


@functools.cache
def directory() -> BillingDirectory:
    return parse_directory(ENTITIES.read_text())


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def money(currency: str, amount: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount=amount)


def price(currency: str, mrc: str, nrc: str, burst: str) -> common_pb2.PriceTerms:
    return common_pb2.PriceTerms(
        currency_code=currency, mrc=money(currency, mrc), nrc=money(currency, nrc),
        burst_price_per_mbps=money(currency, burst), term_months=12, price_book_version="pb-1",
    )


def activated(
    circuit: str, tenant: str, when: datetime, mbps: int, terms: common_pb2.PriceTerms
) -> circuit_pb2.CircuitActivated:
    return circuit_pb2.CircuitActivated(
        event_id=str(uuid.uuid4()), occurred_at=stamp(when), circuit_id=circuit,
        tenant_id=tenant, bandwidth_mbps=mbps, price=terms, effective_time=stamp(when),
    )


def modified(
    circuit: str, tenant: str, when: datetime, mbps: int, terms: common_pb2.PriceTerms
) -> circuit_pb2.CircuitModified:
    return circuit_pb2.CircuitModified(
        event_id=str(uuid.uuid4()), occurred_at=stamp(when), circuit_id=circuit,
        tenant_id=tenant, bandwidth_mbps=mbps, price=terms, effective_time=stamp(when),
    )


def sample(
    circuit: str, tenant: str, start: datetime, bytes_in: int, bytes_out: int,
    *, valid: bool = True, side: Side | None = None,
) -> usage_pb2.UsageSample:
    """A 5-minute sample; by default from the end billed for ``tenant``."""
    side = side or billed_side(directory().customer(tenant).entity)
    return usage_pb2.UsageSample(
        event_id=str(uuid.uuid4()), occurred_at=stamp(start + timedelta(minutes=5)),
        circuit_id=circuit, tenant_id=tenant, interval_start_time=stamp(start),
        interval_seconds=300, bytes_in=bytes_in, bytes_out=bytes_out,
        router_name="sg-edge-1" if side is Side.SINGAPORE else "cq-edge-1",
        interface_name="xe-0/0/1.100", read_time=stamp(start + timedelta(minutes=5)),
        valid=valid, invalid_reason="" if valid else "counter-reset",
        side=int(side),  # type: ignore[arg-type]
    )


def envelope_for(message: Message, topic: str = "direct") -> Envelope:
    event_id = getattr(message, "event_id", "") or str(uuid.uuid4())
    return Envelope(
        event_id=event_id, event_type=message.DESCRIPTOR.full_name, schema_version="1",
        topic=topic, partition=0, offset=0, key=None, timestamp_ms=None,
    )


def ingest_directly(
    factory: sessionmaker[Session], clock: Clock, messages: list[Message]
) -> None:
    """Store events through the consumers' own handlers in one transaction (bulk loads)."""
    usage, contracts = UsageIngest(clock), ContractIngest(clock)
    with db.transaction(factory) as session:
        for message in messages:
            handler = usage if isinstance(message, usage_pb2.UsageSample) else contracts
            handler(session, message, envelope_for(message))


def publish(
    settings: KafkaSettings, topic: str, messages: list[tuple[Message, str | None]]
) -> None:
    """Send (message, event id or None for its own) to ``topic``, keyed by circuit id."""
    producer = KafkaProducer(**producer_config(settings))
    try:
        for message, event_id in messages:
            key = getattr(message, "circuit_id", "") or None
            encoded = encode_event(message, key, event_id=event_id or message.event_id)  # type: ignore[attr-defined]
            producer.send(
                topic, key=encoded.key, value=encoded.payload, headers=encoded.headers
            ).get(timeout=30)
    finally:
        producer.close()
