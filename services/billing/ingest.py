"""Consumers of the billing service: usage samples and circuit lifecycle events.

Both run inside the consumer's transaction (inbox + handler + commit), so a redelivered
event has no second effect: usage samples a poll at a time (BatchEventConsumer, bulk
inserts), contract events one by one. A usage sample is stored once per circuit, side
(the end metered) and interval, within a batch as across batches: an identical duplicate
(same interval, another event id) is dropped, a different one is kept aside in
``billing_usage_conflicts`` and logged, never billed; the usage peaks get exactly the
billed end's samples stored. A gap volume (the counter delta across missed polls) goes to
``billing_usage_gaps``, never among the samples (first report of a gap wins). An invalid
sample is rejected (dead-lettered) without holding up the others. Every row records when
it was received, so a billing run "as of" a cutoff is reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Table, insert, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, common_pb2, usage_pb2
from idc.type.v1 import money_pb2
from services.billing import metrics
from services.billing.domain.contracts import ChangeKind
from services.billing.domain.ends import side_of
from services.billing.domain.money import minor_unit, parse_amount
from services.billing.peaks import record_samples
from services.billing.tables import (
    BoostChangeRow,
    CircuitChangeRow,
    GapVolumeRow,
    UsageConflictRow,
    UsageSampleRow,
)
from services.common.config import KafkaSettings
from services.common.errors import InvalidArgument
from services.common.events import (
    BatchEventConsumer,
    EventConsumer,
    EventRegistry,
    RejectedItems,
)
from services.common.events.bulk import insert_new
from services.common.events.catalog import circuit_topic_registry
from services.common.events.envelope import Envelope
from services.common.events.topics import CIRCUIT_EVENTS, USAGE_SAMPLES

log = logging.getLogger(__name__)

USAGE_GROUP = "billing.usage-ingest"
CONTRACTS_GROUP = "billing.contracts"
USAGE_BATCH = 5000  # records per poll and transaction, at most
MAX_OCTETS = 2**63 - 1  # BIGINT; 260 Gbps for 5 minutes is about 10^13

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


USAGE_REGISTRY = EventRegistry([usage_pb2.UsageSample])
# Every event type on idc.circuit.events decodes (so ProvisioningPlanned or
# ProvisioningFailed are acknowledged and ignored, not dead-lettered).
CIRCUIT_REGISTRY = circuit_topic_registry()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(stamp: Timestamp, field: str) -> datetime:
    moment = _optional_instant(stamp, field)
    if moment is None:
        raise InvalidArgument.for_field(field, "is required")
    return moment


def _optional_instant(stamp: Timestamp, field: str) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    # Timestamp.ToDatetime, without its cost (it is paid per sample); nanos toward zero.
    try:
        return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=int(stamp.nanos / 1000))
    except OverflowError as error:
        raise InvalidArgument.for_field(field, "is out of range") from error


class UsageIngest:
    """Handler of idc.events.v1.UsageSample: :meth:`batch` for a poll's events, or one
    event at a time by calling the instance."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self._clock = clock

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        try:
            self.batch(session, [(event, envelope)])
        except RejectedItems as rejected:
            raise next(iter(rejected.errors.values())) from None

    def batch(self, session: Session, items: Sequence[tuple[Message, Envelope]]) -> None:
        """Store new samples, drop identical duplicates, set differing ones aside.

        Every sample is validated first: invalid ones are rejected (dead-lettered by the
        consumer) before anything is written, so they never poison the others.
        """
        received_at = self._clock()
        rows: list[dict[str, Any]] = []
        gaps: list[dict[str, Any]] = []
        errors: dict[int, Exception] = {}
        for index, (event, envelope) in enumerate(items):
            try:
                if not isinstance(event, usage_pb2.UsageSample):
                    raise InvalidArgument(f"unexpected {envelope.event_type} on {envelope.topic}")
                row = self.row_for(event, envelope.event_id, received_at)
                if event.gap_volume:
                    gaps.append(_gap_row(row, event))
                else:
                    rows.append(row)
            except InvalidArgument as error:
                errors[index] = error
        if errors:
            raise RejectedItems(errors)
        _store_samples(session, rows)
        _store_gaps(session, gaps)

    def row_for(
        self, event: usage_pb2.UsageSample, event_id: str, received_at: datetime | None = None
    ) -> dict[str, Any]:
        """The ``billing_usage_samples`` row of ``event``; InvalidArgument if malformed."""
        if not event.circuit_id:
            raise InvalidArgument.for_field("circuit_id", "is required")
        if event.interval_seconds <= 0:
            raise InvalidArgument.for_field("interval_seconds", "must be positive")
        for field, value in (("bytes_in", event.bytes_in), ("bytes_out", event.bytes_out)):
            if value > MAX_OCTETS:
                raise InvalidArgument.for_field(field, f"{value} octets is beyond any interval")
        return {
            "circuit_id": event.circuit_id,
            "side": int(side_of(event.side)),
            "interval_start": _instant(event.interval_start_time, "interval_start_time"),
            "interval_seconds": event.interval_seconds,
            "bytes_in": event.bytes_in,
            "bytes_out": event.bytes_out,
            "valid": event.valid,
            "invalid_reason": event.invalid_reason[:64],
            "tenant_id": event.tenant_id,
            "router_name": event.router_name,
            "interface_name": event.interface_name,
            "read_time": _optional_instant(event.read_time, "read_time"),
            "event_id": event.event_id or event_id,
            "received_at": received_at or self._clock(),
        }


_SAMPLES = cast(Table, UsageSampleRow.__table__)
_GAPS = cast(Table, GapVolumeRow.__table__)
_CONFLICTS = cast(Table, UsageConflictRow.__table__)
_GAP_COLUMNS = (
    "circuit_id", "side", "interval_start", "interval_seconds", "bytes_in", "bytes_out",
    "valid", "invalid_reason", "tenant_id", "router_name", "event_id", "received_at",
)


def _gap_row(row: Mapping[str, Any], event: usage_pb2.UsageSample) -> dict[str, Any]:
    if event.intervals_missed < 2:
        raise InvalidArgument.for_field(
            "intervals_missed", "a gap volume spans at least two intervals"
        )
    if event.interval_seconds % event.intervals_missed:
        raise InvalidArgument.for_field(
            "interval_seconds", "of a gap volume must be a whole number of intervals"
        )
    return {name: row[name] for name in _GAP_COLUMNS} | {"intervals": event.intervals_missed}


def _store_gaps(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert gap volumes; a repeat of a gap already stored (same circuit, side, start) is
    dropped, logged if it differs."""
    if not rows:
        return
    key = ["circuit_id", "side", "interval_start"]
    inserted = insert_new(session, _GAPS, rows, key, key)
    if len(inserted) < len(rows):
        log.info("%d repeated gap volume(s) dropped", len(rows) - len(inserted))
_MEASUREMENT = ("interval_seconds", "bytes_in", "bytes_out", "valid")


def _store_samples(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (in order; the first report of an interval wins, within the batch as
    across batches); an identical later report is dropped, a differing one set aside."""
    first: dict[tuple[str, int, datetime], Mapping[str, Any]] = {}
    later: list[Mapping[str, Any]] = []
    for row in rows:
        key = (row["circuit_id"], row["side"], row["interval_start"])
        if key in first:
            later.append(row)
        else:
            first[key] = row
    interval = ["circuit_id", "side", "interval_start"]
    inserted = {
        (row.circuit_id, row.side, row.interval_start)
        for row in insert_new(session, _SAMPLES, list(first.values()), interval, interval)
    }
    again = [row for key, row in first.items() if key not in inserted] + later
    set_aside = _set_aside_conflicts(session, again) if again else 0
    # Exactly the samples stored now: the peaks stand for "every stored sample".
    record_samples(session, [row for key, row in first.items() if key in inserted])
    metrics.ingested(session, len(inserted), set_aside)


def _set_aside_conflicts(session: Session, rows: list[Mapping[str, Any]]) -> int:
    """``rows`` repeat an interval already stored: compare them with the stored report;
    returns how many differed and were set aside."""
    columns = _SAMPLES.c
    keys = {(row["circuit_id"], row["side"], row["interval_start"]) for row in rows}
    stored = {
        (kept.circuit_id, kept.side, kept.interval_start): kept
        for kept in session.execute(
            select(
                columns.circuit_id, columns.side, columns.interval_start, columns.event_id,
                *(columns[name] for name in _MEASUREMENT),
            ).where(tuple_(columns.circuit_id, columns.side, columns.interval_start).in_(keys))
        )
    }
    conflicts = []
    for row in rows:
        kept = stored[(row["circuit_id"], row["side"], row["interval_start"])]
        if all(getattr(kept, name) == row[name] for name in _MEASUREMENT):
            log.debug("duplicate sample %s for %s dropped", row["event_id"], row["circuit_id"])
            continue
        log.warning(
            "conflicting sample %s for circuit %s interval %s: kept %s, set %s aside",
            row["event_id"], row["circuit_id"], row["interval_start"].isoformat(),
            kept.event_id, row["event_id"],
        )
        conflicts.append(
            {name: row[name] for name in _CONFLICT_COLUMNS} | {"kept_event_id": kept.event_id}
        )
    if conflicts:
        session.execute(insert(_CONFLICTS), conflicts)
    return len(conflicts)


_CONFLICT_COLUMNS = (
    "circuit_id", "interval_start", "interval_seconds", "bytes_in", "bytes_out", "valid",
    "invalid_reason", "router_name", "event_id", "received_at",
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
        if isinstance(event, circuit_pb2.CircuitModified) and event.HasField("boost"):
            _store_boost(session, boost_row_for(event, event_id, self._clock()))
            return
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
        tenant = _tenant_billed(event)
        if event.bandwidth_mbps <= 0:
            raise InvalidArgument.for_field("bandwidth_mbps", "must be positive")
        price = _price(event.price)
        return CircuitChangeRow(
            event_id=event_id,
            circuit_id=event.circuit_id,
            tenant_id=tenant,
            kind=kind.value,
            effective_time=_instant(event.effective_time, "effective_time"),
            occurred_at=_optional_instant(event.occurred_at, "occurred_at"),
            bandwidth_mbps=event.bandwidth_mbps,
            received_at=self._clock(),
            **price,
        )


def _tenant_billed(
    event: circuit_pb2.CircuitActivated | circuit_pb2.CircuitModified
    | circuit_pb2.CircuitDisconnected,
) -> str:
    if not event.circuit_id:
        raise InvalidArgument.for_field("circuit_id", "is required")
    tenant = event.tenant_id or event.circuit.tenant_id
    if not tenant:
        raise InvalidArgument.for_field("tenant_id", "is required to bill the circuit")
    return tenant


_BOOST_WINDOW = ("base_mbps", "boosted_mbps", "start_time", "end_time", "circuit_id")


def boost_row_for(
    event: circuit_pb2.CircuitModified, event_id: str, received_at: datetime
) -> BoostChangeRow:
    """The ``billing_boost_changes`` row of a boost's raise or revert; InvalidArgument
    naming the field when the event does not describe one consistently."""
    boost = event.boost
    tenant = _tenant_billed(event)
    if not 0 < len(boost.boost_id) <= 64:
        raise InvalidArgument.for_field("boost.boost_id", "is required, at most 64 characters")
    if not 0 < boost.base_bandwidth_mbps < boost.boosted_bandwidth_mbps:
        raise InvalidArgument.for_field(
            "boost.boosted_bandwidth_mbps",
            f"{boost.boosted_bandwidth_mbps} must exceed a positive base "
            f"({boost.base_bandwidth_mbps} Mbps)",
        )
    start = _instant(boost.start_time, "boost.start_time")
    end = _instant(boost.end_time, "boost.end_time")
    if end <= start:
        raise InvalidArgument.for_field("boost.end_time", "must be after boost.start_time")
    now_at = boost.base_bandwidth_mbps if boost.revert else boost.boosted_bandwidth_mbps
    if event.bandwidth_mbps != now_at:
        raise InvalidArgument.for_field(
            "bandwidth_mbps",
            f"{event.bandwidth_mbps} is not the {'base' if boost.revert else 'boosted'} "
            f"bandwidth {now_at} of boost {boost.boost_id}",
        )
    terms = _price(event.price)
    hourly = _boost_price(event.price, required=not boost.revert)
    return BoostChangeRow(
        event_id=event_id,
        circuit_id=event.circuit_id,
        tenant_id=tenant,
        boost_id=boost.boost_id,
        revert=boost.revert,
        effective_time=_instant(event.effective_time, "effective_time"),
        occurred_at=_optional_instant(event.occurred_at, "occurred_at"),
        base_mbps=boost.base_bandwidth_mbps,
        boosted_mbps=boost.boosted_bandwidth_mbps,
        start_time=start,
        end_time=end,
        currency=terms["currency"],
        price_per_mbps_hour=hourly,
        received_at=received_at,
    )


def _boost_price(price: common_pb2.PriceTerms, *, required: bool) -> str:
    money = price.boost_price_per_mbps_hour
    if not money.amount and required:
        raise InvalidArgument.for_field(
            "price.boost_price_per_mbps_hour", "is required on a boost's raise"
        )
    return _amount(money, price.currency_code, "price.boost_price_per_mbps_hour")


def _store_boost(session: Session, row: BoostChangeRow) -> None:
    """Keep a raise or revert once: a redelivery (same event id) or a repeat of the same
    change is dropped; one that contradicts what is stored of the boost is refused (the
    consumer dead-letters it, naming the boost), never billed. A revert may arrive before
    its raise: it waits, unbilled, for the raise (domain/boosts.py)."""
    stored = session.scalars(
        select(BoostChangeRow).where(
            (BoostChangeRow.event_id == row.event_id) | (BoostChangeRow.boost_id == row.boost_id)
        )
    ).all()
    if any(kept.event_id == row.event_id for kept in stored):
        return
    for kept in stored:
        differs = [f for f in _BOOST_WINDOW if getattr(kept, f) != getattr(row, f)]
        if differs:
            raise InvalidArgument.for_field(
                "boost", f"{row.boost_id}: {', '.join(differs)} differ from its "
                f"{'revert' if kept.revert else 'raise'} {kept.event_id} already kept"
            )
        if kept.revert == row.revert:
            if kept.effective_time != row.effective_time:
                raise InvalidArgument.for_field(
                    "effective_time",
                    f"boost {row.boost_id} was already "
                    f"{'reverted' if row.revert else 'raised'} at "
                    f"{kept.effective_time.isoformat()} (event {kept.event_id})",
                )
            log.info("repeated %s of boost %s dropped", row.event_id, row.boost_id)
            return
    session.add(row)


def _price(price: common_pb2.PriceTerms) -> dict[str, str | int]:
    currency = price.currency_code
    minor_unit(currency)
    amounts: dict[str, str | int] = {}
    for field, money in (
        ("mrc", price.mrc),
        ("nrc", price.nrc),
        ("burst_price", price.burst_price_per_mbps),
    ):
        amounts[field] = _amount(money, currency, f"price.{field}")
    share = parse_amount(price.termination_share or "0", "price.termination_share")
    if not 0 <= share <= 1:
        raise InvalidArgument.for_field(
            "price.termination_share", f"{share:f} is not a share between 0 and 1"
        )
    return {
        "currency": currency,
        **amounts,
        "term_months": price.term_months,
        "price_book_version": price.price_book_version[:64],
        # Validated to a number's shape by the order service; the column bounds it here.
        "purchase_order": price.purchase_order[:35],
        "termination_share": f"{share:f}",
    }


def _amount(money: money_pb2.Money, currency: str, where: str) -> str:
    """A price's amount as a plain decimal string ("0" when empty), in ``currency``."""
    if money.currency_code and money.currency_code != currency:
        raise InvalidArgument.for_field(
            where, f"is in {money.currency_code}, the price terms in {currency}"
        )
    value = parse_amount(money.amount or "0", where)
    if value < 0:
        raise InvalidArgument.for_field(where, "must not be negative")
    return f"{value:f}"


def usage_consumer(
    session_factory: sessionmaker[Session],
    settings: KafkaSettings,
    *,
    topic: str = USAGE_SAMPLES,
    clock: Clock = utcnow,
) -> BatchEventConsumer:
    return BatchEventConsumer(
        [topic], USAGE_GROUP, UsageIngest(clock).batch, session_factory, settings,
        registry=USAGE_REGISTRY,
        # A backlog (after downtime, or a meter catching up) is taken in large batches:
        # the per-transaction costs (peaks rows of every circuit in it, commit) are shared.
        consumer_overrides={"max_poll_records": USAGE_BATCH},
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
