"""Consumers of the billing service: usage samples and circuit lifecycle events.

Both run inside the EventConsumer's transaction (inbox + handler + commit), so a
redelivered event has no second effect. A usage sample is stored once per circuit and
interval: an identical duplicate (same interval, another event id) is dropped, a different
one is kept aside in ``billing_usage_conflicts`` and logged, never billed. Every row records
when it was received, so a billing run "as of" a cutoff is reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, common_pb2, usage_pb2
from services.billing.domain.contracts import ChangeKind
from services.billing.domain.money import minor_unit, parse_amount
from services.billing.tables import CircuitChangeRow, UsageConflictRow, UsageSampleRow
from services.common.config import KafkaSettings
from services.common.errors import InvalidArgument
from services.common.events import EventConsumer, EventRegistry
from services.common.events.catalog import circuit_topic_registry
from services.common.events.envelope import Envelope
from services.common.events.topics import CIRCUIT_EVENTS, USAGE_SAMPLES

log = logging.getLogger(__name__)

USAGE_GROUP = "billing.usage-ingest"
CONTRACTS_GROUP = "billing.contracts"
MAX_OCTETS = 2**63 - 1  # BIGINT; 260 Gbps for 5 minutes is about 10^13

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


USAGE_REGISTRY = EventRegistry([usage_pb2.UsageSample])
# Every event type on idc.circuit.events decodes (so ProvisioningPlanned or
# ProvisioningFailed are acknowledged and ignored, not dead-lettered).
CIRCUIT_REGISTRY = circuit_topic_registry()


def _instant(stamp: Timestamp, field: str) -> datetime:
    if stamp.seconds == 0 and stamp.nanos == 0:
        raise InvalidArgument.for_field(field, "is required")
    return stamp.ToDatetime(tzinfo=UTC)


def _optional_instant(stamp: Timestamp) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


class UsageIngest:
    """Handler of idc.events.v1.UsageSample."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self._clock = clock

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        if not isinstance(event, usage_pb2.UsageSample):
            raise InvalidArgument(f"unexpected {envelope.event_type} on {envelope.topic}")
        row = self.row_for(event, envelope.event_id)
        stored = session.scalars(
            select(UsageSampleRow).where(
                UsageSampleRow.circuit_id == row.circuit_id,
                UsageSampleRow.interval_start == row.interval_start,
            )
        ).first()
        if stored is None:
            session.add(row)
            return
        if _same_measurement(stored, row):
            log.debug("duplicate sample %s for %s dropped", envelope.event_id, row.circuit_id)
            return
        log.warning(
            "conflicting sample %s for circuit %s interval %s: kept %s, set %s aside",
            envelope.event_id, row.circuit_id, row.interval_start.isoformat(),
            stored.event_id, envelope.event_id,
        )
        session.add(
            UsageConflictRow(
                circuit_id=row.circuit_id,
                interval_start=row.interval_start,
                interval_seconds=row.interval_seconds,
                bytes_in=row.bytes_in,
                bytes_out=row.bytes_out,
                valid=row.valid,
                invalid_reason=row.invalid_reason,
                router_name=row.router_name,
                event_id=row.event_id,
                kept_event_id=stored.event_id,
                received_at=row.received_at,
            )
        )

    def row_for(self, event: usage_pb2.UsageSample, event_id: str) -> UsageSampleRow:
        if not event.circuit_id:
            raise InvalidArgument.for_field("circuit_id", "is required")
        if event.interval_seconds <= 0:
            raise InvalidArgument.for_field("interval_seconds", "must be positive")
        for field, value in (("bytes_in", event.bytes_in), ("bytes_out", event.bytes_out)):
            if value > MAX_OCTETS:
                raise InvalidArgument.for_field(field, f"{value} octets is beyond any interval")
        return UsageSampleRow(
            circuit_id=event.circuit_id,
            interval_start=_instant(event.interval_start_time, "interval_start_time"),
            interval_seconds=event.interval_seconds,
            bytes_in=event.bytes_in,
            bytes_out=event.bytes_out,
            valid=event.valid,
            invalid_reason=event.invalid_reason[:64],
            tenant_id=event.tenant_id,
            router_name=event.router_name,
            interface_name=event.interface_name,
            read_time=_optional_instant(event.read_time),
            event_id=event.event_id or event_id,
            received_at=self._clock(),
        )


def _same_measurement(stored: UsageSampleRow, new: UsageSampleRow) -> bool:
    return (stored.interval_seconds, stored.bytes_in, stored.bytes_out, stored.valid) == (
        new.interval_seconds, new.bytes_in, new.bytes_out, new.valid,
    )


_CHANGES: dict[type[Message], ChangeKind] = {
    circuit_pb2.CircuitActivated: ChangeKind.ACTIVATED,
    circuit_pb2.CircuitModified: ChangeKind.MODIFIED,
    circuit_pb2.CircuitDisconnected: ChangeKind.DISCONNECTED,
}


class ContractIngest:
    """Handler of idc.circuit.events: keeps each circuit's dated changes; ignores the rest."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self._clock = clock

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        kind = _CHANGES.get(type(event))
        if kind is None:
            log.debug("ignoring %s %s", envelope.event_type, envelope.event_id)
            return
        assert isinstance(
            event,
            circuit_pb2.CircuitActivated | circuit_pb2.CircuitModified
            | circuit_pb2.CircuitDisconnected,
        )
        event_id = event.event_id or envelope.event_id
        if session.scalar(
            select(CircuitChangeRow.id).where(CircuitChangeRow.event_id == event_id)
        ) is not None:
            return
        session.add(self.row_for(kind, event, event_id))

    def row_for(
        self,
        kind: ChangeKind,
        event: circuit_pb2.CircuitActivated | circuit_pb2.CircuitModified
        | circuit_pb2.CircuitDisconnected,
        event_id: str,
    ) -> CircuitChangeRow:
        if not event.circuit_id:
            raise InvalidArgument.for_field("circuit_id", "is required")
        tenant = event.tenant_id or event.circuit.tenant_id
        if not tenant:
            raise InvalidArgument.for_field("tenant_id", "is required to bill the circuit")
        if event.bandwidth_mbps <= 0:
            raise InvalidArgument.for_field("bandwidth_mbps", "must be positive")
        price = _price(event.price)
        return CircuitChangeRow(
            event_id=event_id,
            circuit_id=event.circuit_id,
            tenant_id=tenant,
            kind=kind.value,
            effective_time=_instant(event.effective_time, "effective_time"),
            occurred_at=_optional_instant(event.occurred_at),
            bandwidth_mbps=event.bandwidth_mbps,
            received_at=self._clock(),
            **price,
        )


def _price(price: common_pb2.PriceTerms) -> dict[str, str | int]:
    currency = price.currency_code
    minor_unit(currency)
    amounts: dict[str, str | int] = {}
    for field, money in (
        ("mrc", price.mrc),
        ("nrc", price.nrc),
        ("burst_price", price.burst_price_per_mbps),
    ):
        where = f"price.{field}"
        if money.currency_code and money.currency_code != currency:
            raise InvalidArgument.for_field(
                where, f"is in {money.currency_code}, the price terms in {currency}"
            )
        value = parse_amount(money.amount or "0", where)
        if value < 0:
            raise InvalidArgument.for_field(where, "must not be negative")
        amounts[field] = f"{value:f}"
    return {
        "currency": currency,
        **amounts,
        "term_months": price.term_months,
        "price_book_version": price.price_book_version[:64],
    }


def usage_consumer(
    session_factory: sessionmaker[Session],
    settings: KafkaSettings,
    *,
    topic: str = USAGE_SAMPLES,
    clock: Clock = utcnow,
) -> EventConsumer:
    return EventConsumer(
        [topic], USAGE_GROUP, UsageIngest(clock), session_factory, settings,
        registry=USAGE_REGISTRY,
    )


def contracts_consumer(
    session_factory: sessionmaker[Session],
    settings: KafkaSettings,
    *,
    topic: str = CIRCUIT_EVENTS,
    clock: Clock = utcnow,
) -> EventConsumer:
    return EventConsumer(
        [topic], CONTRACTS_GROUP, ContractIngest(clock), session_factory, settings,
        registry=CIRCUIT_REGISTRY,
    )
