"""Helpers for the billing integration tests: a migrated database, events, a fixed clock."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaProducer
from sqlalchemy.orm import Session, sessionmaker

from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from idc.events.v1 import circuit_pb2, common_pb2, usage_pb2
from idc.type.v1 import money_pb2
from services.billing.app import billing_close
from services.billing.close import UsageLag
from services.billing.domain.close import PartitionLag
from services.billing.domain.ends import Side, billed_side
from services.billing.domain.entities import BillingDirectory, parse_directory
from services.billing.ingest import ContractIngest, UsageIngest
from services.billing.job_store import SqlJobStore
from services.billing.jobs import JobRunner, JobSettings
from services.billing.servicer import BillingServicer
from services.billing.store import SqlBillingStore
from services.common import db
from services.common.config import KafkaSettings, ServiceSettings
from services.common.events import RejectedItems, encode_event
from services.common.events.envelope import Envelope
from services.common.events.relay import producer_config
from services.common.grpc_server import GrpcApp
from services.common.servicers import register
from services.common.tokens import HarnessKeys

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


def price(
    currency: str, mrc: str, nrc: str, burst: str, purchase_order: str = "", *,
    term_months: int = 12, termination_share: str = "",
) -> common_pb2.PriceTerms:
    return common_pb2.PriceTerms(
        currency_code=currency, mrc=money(currency, mrc), nrc=money(currency, nrc),
        burst_price_per_mbps=money(currency, burst), term_months=term_months,
        price_book_version="pb-1", purchase_order=purchase_order,
        termination_share=termination_share,
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


def disconnected(
    circuit: str, tenant: str, when: datetime, mbps: int, terms: common_pb2.PriceTerms
) -> circuit_pb2.CircuitDisconnected:
    return circuit_pb2.CircuitDisconnected(
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


def caught_up() -> list[PartitionLag]:
    """A usage consumer with nothing left to read (tests that do not use the broker)."""
    return []


def billing_servicer(
    factory: sessionmaker[Session], clock: Clock, usage_lag: UsageLag = caught_up,
    settings: JobSettings | None = None,
) -> tuple[BillingServicer, JobRunner]:
    """The BillingService as the process wires it, and its job worker (to run in an app)."""
    store, jobs, entities = SqlBillingStore(factory), SqlJobStore(factory), directory()
    runner, close = billing_close(
        store, jobs, entities, settings or JobSettings(), usage_lag, clock
    )
    return BillingServicer(store, close, jobs, entities, clock), runner


def envelope_for(message: Message, topic: str = "direct") -> Envelope:
    event_id = getattr(message, "event_id", "") or str(uuid.uuid4())
    return Envelope(
        event_id=event_id, event_type=message.DESCRIPTOR.full_name, schema_version="1",
        topic=topic, partition=0, offset=0, key=None, timestamp_ms=None,
    )


def ingest_directly(
    factory: sessionmaker[Session], clock: Clock, messages: list[Message]
) -> None:
    """Store events through the consumers' own handlers in one transaction (bulk loads).

    Consecutive usage samples go to the usage ingest as one batch, as the batch consumer
    hands them over (one sample per call would make a month of samples thousands of
    staging-table round trips); contract events keep their order around them."""
    usage, contracts = UsageIngest(clock), ContractIngest(clock)
    pending: list[tuple[Message, Envelope]] = []

    def flush(session: Session) -> None:
        if pending:
            try:
                usage.batch(session, pending)
            except RejectedItems as rejected:
                raise next(iter(rejected.errors.values())) from None
            pending.clear()

    with db.transaction(factory) as session:
        for message in messages:
            if isinstance(message, usage_pb2.UsageSample):
                pending.append((message, envelope_for(message)))
                continue
            flush(session)
            contracts(session, message, envelope_for(message))
        flush(session)


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


@contextmanager
def serve_billing(
    servicer: BillingServicer, runner: JobRunner, database_url: str, keys: HarnessKeys
) -> Iterator[tuple[billing_service_pb2_grpc.BillingServiceStub, str]]:
    """BillingService and its job worker on a local port, authenticating ``keys``' tokens;
    yields a stub and the address."""
    app = GrpcApp(
        settings=ServiceSettings(name="billing", listen="127.0.0.1:0", database_url=database_url,
                                 grace_period_s=1.0),
        register=lambda server: [register(
            server, billing_service_pb2.DESCRIPTOR, "BillingService",
            billing_service_pb2_grpc.add_BillingServiceServicer_to_server, servicer,
        )],
        tokens=keys.verifier(),
        workers=[runner],
    )
    port = app.start()
    try:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address) as channel:
            yield billing_service_pb2_grpc.BillingServiceStub(channel), address
    finally:
        app.stop()
