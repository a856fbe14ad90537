"""Boosts on the real broker and databases: raise and revert (redelivered out of order),
samples, a month's run, and the BOOST line to the cent.

The customer acme-sg is billed by sg-telco in Asia/Singapore (UTC+8), in SGD, GST 9 %.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pypdfium2  # type: ignore[import-untyped]
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idc.billing.v1 import invoice_pb2
from idc.events.v1 import circuit_pb2, common_pb2
from services.billing import export
from services.billing.cycle import BillingCycle, CycleRequest, Summary
from services.billing.domain.rating import BillingMonth, LineKind
from services.billing.ingest import contracts_consumer, usage_consumer
from services.billing.invoices import StoredInvoice, invoice_id_for
from services.billing.servicer import to_proto
from services.billing.store import SqlBillingStore
from services.billing.tables import BoostChangeRow, CircuitChangeRow
from services.common.config import KafkaSettings
from services.common.errors import InvalidArgument
from services.common.events import InboxRow
from tests.integration.billing.support import (
    Clock,
    activated,
    directory,
    disconnected,
    ingest_directly,
    migrated,
    money,
    price,
    publish,
    sample,
    stamp,
)
from tests.integration.billing.test_ingest import consume_until, count, fresh_topic

pytestmark = pytest.mark.integration

SGT = ZoneInfo("Asia/Singapore")
MARCH = BillingMonth(2025, 3)
BYTES_PER_MBPS = 37_500_000  # 1 Mbps during 300 s


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=SGT).astimezone(UTC)


def terms() -> common_pb2.PriceTerms:
    base = price("SGD", "2180.25", "0", "12.50")
    base.boost_price_per_mbps_hour.CopyFrom(money("SGD", "0.0125"))
    return base


def boost_change(
    effective: datetime, *, revert: bool, boost_id: str = "b-1", start: datetime | None = None,
    end: datetime | None = None, base: int = 100, boosted: int = 433,
    event_id: str | None = None,
) -> circuit_pb2.CircuitModified:
    return circuit_pb2.CircuitModified(
        event_id=event_id or str(uuid.uuid4()), occurred_at=stamp(effective),
        circuit_id="c-boost", tenant_id="acme-sg",
        previous_bandwidth_mbps=boosted if revert else base,
        bandwidth_mbps=base if revert else boosted, price=terms(),
        effective_time=stamp(effective),
        boost=common_pb2.Boost(
            boost_id=boost_id, base_bandwidth_mbps=base, boosted_bandwidth_mbps=boosted,
            start_time=stamp(start or at(10, 10)), end_time=stamp(end or at(10, 12, 30)),
            revert=revert,
        ),
    )


def mbps(value: int) -> int:
    return value * BYTES_PER_MBPS


def run(cycle: BillingCycle) -> Summary:
    last = list(cycle.run(CycleRequest(month=MARCH, tenant_ids=["acme-sg"])))[-1]
    assert isinstance(last, Summary)
    return last


def march_invoice(store: SqlBillingStore) -> StoredInvoice:
    invoice = store.invoice(invoice_id_for("acme-sg", MARCH))
    assert invoice is not None
    return invoice


def test_a_boost_through_the_broker_is_billed_per_started_hour_and_not_as_burst(
    request: pytest.FixtureRequest, postgres_database_url: str, kafka_settings: KafkaSettings
) -> None:
    """Booked 10 March 10:00 to 12:30 (Singapore), +333 Mbps (100 to 433); raised 10
    minutes late (10:10), reverted 20 minutes late (12:50): billed 10:10 to 12:30 = 2 h 20 =
    3 started hours, 0.0125 * 333 * 3 = 12.4875 -> 12.49.

    Samples (20): 3 while the boost was in force at 400 Mbps (less 333: 67), 15 at 50, one
    at 140, one at 150. Nearest rank discards floor(5 * 20 / 100) = 1 (the 150): p95 140,
    overage 40 over the 100 Mbps CIR, 12.50 * 40 = 500.00 (without the boost taken off,
    the 400s would make it 300 Mbps, 3750.00). MRC the whole month 2180.25.
    Subtotal 2180.25 + 500.00 + 12.49 = 2692.74; GST 9 % 242.3466 -> 242.35; 2935.09.
    """
    factory: sessionmaker[Session] = migrated(postgres_database_url)
    circuits = fresh_topic(request, kafka_settings, "circuits")
    usage = fresh_topic(request, kafka_settings, "usage")
    clock = Clock(datetime(2025, 4, 2, tzinfo=UTC))
    raise_ = boost_change(at(10, 10, 10), revert=False)
    revert = boost_change(at(10, 12, 50), revert=True)
    # The raise again under another event id (a republished change): dropped as a repeat.
    raise_again = boost_change(at(10, 10, 10), revert=False)
    publish(kafka_settings, circuits, [
        (activated("c-boost", "acme-sg", at(20, 0, month=2), 100, terms()), None),
        (revert, None),  # the revert first, as after a redelivery
        (raise_, None),
        (revert, None),  # redelivered: same event id
        (raise_again, None),
    ])
    inside = [sample("c-boost", "acme-sg", at(10, 10, 15 + 5 * i), mbps(400), mbps(20))
              for i in range(3)]
    outside = [sample("c-boost", "acme-sg", at(12, 9) + timedelta(minutes=5 * i), mbps(50),
                      mbps(20)) for i in range(15)]
    peaks = [sample("c-boost", "acme-sg", at(13, 9), mbps(140), mbps(20)),
             sample("c-boost", "acme-sg", at(13, 10), mbps(150), mbps(20))]
    publish(kafka_settings, usage, [(s, None) for s in [*inside, *outside, *peaks]])
    with contracts_consumer(factory, kafka_settings, topic=circuits, clock=clock) as consumer:
        consume_until(
            consumer, lambda: count(factory, select(func.count()).select_from(InboxRow)) == 4
        )
    with usage_consumer(factory, kafka_settings, topic=usage, clock=clock) as consumer:
        consume_until(
            consumer, lambda: count(factory, select(func.count()).select_from(InboxRow)) == 24
        )
    with factory() as session:
        kept = session.scalars(select(BoostChangeRow).order_by(BoostChangeRow.revert)).all()
        changes = session.scalars(select(CircuitChangeRow.kind)).all()
    # The boost never became an MRC segment; one raise and one revert are kept.
    assert changes == ["activated"]
    assert [(k.event_id, k.revert) for k in kept] == [
        (raise_.event_id, False), (revert.event_id, True)
    ]
    store = SqlBillingStore(factory)
    clock.advance(minutes=1)
    assert run(BillingCycle(store, directory(), clock)).created == 1
    invoice = march_invoice(store)
    amounts = {s.line.kind: s.line.amount for s in invoice.lines}
    assert amounts == {
        LineKind.MRC: Decimal("2180.25"), LineKind.BURST: Decimal("500.00"),
        LineKind.BOOST: Decimal("12.49"),
    }
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal("2692.74"), Decimal("242.35"), Decimal("2935.09")
    )
    [boost_line] = [s for s in invoice.lines if s.line.kind is LineKind.BOOST]
    message = to_proto(invoice)
    [proto_line] = [x for x in message.lines if x.kind == invoice_pb2.INVOICE_LINE_KIND_BOOST]
    assert (proto_line.boost.boost_id, proto_line.boost.started_hours, proto_line.factor) == (
        "b-1", 3, "3"
    )
    assert proto_line.boost.billed_start_time.ToDatetime(UTC) == at(10, 10, 10)
    assert proto_line.boost.billed_end_time.ToDatetime(UTC) == at(10, 12, 30)
    [burst] = [x for x in message.lines if x.kind == invoice_pb2.INVOICE_LINE_KIND_BURST]
    assert (burst.burst.billed_sample_mbps, burst.burst.samples_in_boost) == (140, 3)
    rows = list(csv.DictReader(io.StringIO(export.to_csv(invoice, {}).decode())))
    [csv_boost] = [r for r in rows if r["kind"] == "BOOST"]
    assert (csv_boost["line_id"], csv_boost["boost_id"], csv_boost["started_hours"],
            csv_boost["added_mbps"], csv_boost["line_amount"]) == (
        boost_line.id, "b-1", "3", "333", "12.49"
    )
    entity = directory().entity(invoice.billing_entity_id)
    page = pypdfium2.PdfDocument(export.to_pdf(invoice, entity, {}))[0]
    text = page.get_textpage().get_text_range()
    assert "3 started hours x 333 Mbps" in text and "3 h" in text
    # The same month again: the same invoice.
    clock.advance(hours=1)
    assert run(BillingCycle(store, directory(), clock)).unchanged == 1


def test_a_disconnect_mid_boost_ends_its_billing(database_url: str) -> None:
    """Booked 10:00 to 14:00 with no revert; the circuit disconnected at 11:15: billed
    1 h 05 from the raise at 10:10 = 2 started hours, 0.0125 * 333 * 2 = 8.325 -> 8.33."""
    factory = migrated(database_url)
    clock = Clock(datetime(2025, 4, 2, tzinfo=UTC))
    ingest_directly(factory, clock, [
        activated("c-boost", "acme-sg", at(20, 0, month=2), 100, terms()),
        boost_change(at(10, 10, 10), revert=False, end=at(10, 14)),
        disconnected("c-boost", "acme-sg", at(10, 11, 15), 100, terms()),
    ])
    store = SqlBillingStore(factory)
    run(BillingCycle(store, directory(), clock))
    [line] = [s.line for s in march_invoice(store).lines if s.line.kind is LineKind.BOOST]
    assert line.boost is not None
    assert (line.boost.billed_end, line.boost.started_hours, line.amount) == (
        at(10, 11, 15), 2, Decimal("8.33")
    )


def test_contradicting_or_unpriced_boost_changes_are_refused(database_url: str) -> None:
    factory = migrated(database_url)
    clock = Clock(datetime(2025, 4, 2, tzinfo=UTC))
    ingest_directly(factory, clock, [boost_change(at(10, 10), revert=False)])
    # A revert of the same boost with another window: refused, naming what differs.
    with pytest.raises(InvalidArgument, match="end_time"):
        ingest_directly(factory, clock, [boost_change(at(10, 13), revert=True, end=at(10, 13))])
    # A second raise at another time.
    with pytest.raises(InvalidArgument, match="already raised"):
        ingest_directly(factory, clock, [boost_change(at(10, 10, 5), revert=False)])
    unpriced = boost_change(at(11, 10), revert=False, boost_id="b-2")
    unpriced.price.ClearField("boost_price_per_mbps_hour")
    with pytest.raises(InvalidArgument, match="boost_price_per_mbps_hour"):
        ingest_directly(factory, clock, [unpriced])
    # The raise must carry the boosted bandwidth.
    wrong = boost_change(at(11, 10), revert=False, boost_id="b-3")
    wrong.bandwidth_mbps = 100
    with pytest.raises(InvalidArgument, match="bandwidth_mbps"):
        ingest_directly(factory, clock, [wrong])
    assert count(factory, select(func.count()).select_from(BoostChangeRow)) == 1


def test_a_boost_received_after_finalisation_is_an_adjustment_next_month(
    database_url: str,
) -> None:
    """March finalised before the boost's raise and revert reached billing: April's invoice
    carries the boost (10:10 to 12:30, 3 started hours, 12.49) as an adjustment of March."""
    factory = migrated(database_url)
    clock = Clock(datetime(2025, 4, 2, tzinfo=UTC))
    ingest_directly(factory, clock, [
        activated("c-boost", "acme-sg", at(20, 0, month=2), 100, terms()),
    ])
    store = SqlBillingStore(factory)
    cycle = BillingCycle(store, directory(), clock)
    run(cycle)
    march = store.finalize(invoice_id_for("acme-sg", MARCH), clock(), "SG", 30)
    clock.advance(hours=1)
    ingest_directly(factory, clock, [
        boost_change(at(10, 10, 10), revert=False),
        boost_change(at(10, 12, 30), revert=True),
    ])
    clock.now = datetime(2025, 5, 2, tzinfo=UTC)
    april = list(cycle.run(CycleRequest(month=MARCH.next, tenant_ids=["acme-sg"])))[-1]
    assert isinstance(april, Summary) and april.adjustment_lines == 1
    invoice = store.invoice(invoice_id_for("acme-sg", MARCH.next))
    assert invoice is not None
    [adjustment] = [s.line for s in invoice.lines if s.line.adjusts_invoice_id]
    assert (adjustment.adjusts_invoice_id, adjustment.adjusts_line_key, adjustment.amount) == (
        march.id, "c-boost/BOOST/b-1", Decimal("12.49")
    )
    assert adjustment.boost is not None and adjustment.boost.started_hours == 3
