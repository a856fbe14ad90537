"""Gaps kept as gaps and both ends reconciled, with the real meter process, the real
counter agent (both routers) and the real broker, into billing's real store.

* The agent is cut off for several polls while traffic flows: the intervals it missed get
  no sample, the counter delta across them is one gap volume, billing counts it in the
  volume and leaves it out of the 95th percentile.
* Two circuits carry traffic seen at both ends; on one, frames are dropped on the
  Chongqing side: the billing run reports that circuit's difference outside the tolerance
  (a warning, evidence on its lines) and the other inside it, not flagged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session, sessionmaker

from devstack.counters import AGENT_REFRESH_S, CounterAgent
from devstack.services import ServiceProcess
from idc.events.v1 import circuit_pb2, usage_pb2
from idc.type.v1 import side_pb2
from services.billing.cycle import BillingCycle, CycleRequest, Summary
from services.billing.domain.close import WarningKind
from services.billing.domain.ends import Side
from services.billing.domain.percentile import Sample, nearest_rank_p95
from services.billing.domain.rating import BillingMonth, LineKind
from services.billing.domain.reconciliation import intervals_lost
from services.billing.store import SqlBillingStore
from services.common.config import KafkaSettings
from tests.integration.billing.support import (
    Clock,
    directory,
    ingest_directly,
    migrated,
    price,
)
from tests.integration.meter.conftest import (
    CQ_INTERFACE,
    CQ_ROUTER,
    INTERVAL_S,
    SG_INTERFACE,
    SG_ROUTER,
    SampleReader,
    activation,
    publish_activation,
)

pytestmark = pytest.mark.integration

SG, CQ = side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING
TENANT = "tenant-meter-ends"  # not in the entities file: sg-telco bills it, Singapore end
TOLERANCE = Decimal("2")


def until(condition: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {deadline_s} s")
        time.sleep(0.1)


def settled_after(reader: SampleReader, sides: Sequence[int], moment: datetime) -> None:
    """Wait until every side has a record starting after ``moment`` plus the agent's
    refresh: the readings closing them include every frame sent before ``moment``."""
    settled = moment + timedelta(seconds=AGENT_REFRESH_S + 2 * INTERVAL_S)
    reader.until(
        lambda _: all(
            reader.of(side)
            and reader.of(side)[-1].interval_start_time.ToDatetime(UTC) >= settled
            for side in sides
        ),
        "records of both ends after the traffic",
        deadline_s=60.0,
    )


def billing(tmp_path: Path, records: Sequence[usage_pb2.UsageSample],
            activations: Sequence[circuit_pb2.CircuitActivated]) -> tuple[
                sessionmaker[Session], Clock]:
    """Billing's own database with the contracts and every record the meter published."""
    factory = migrated(f"sqlite:///{tmp_path / 'billing.db'}")
    clock = Clock(datetime.now(UTC))
    contracts = []
    for event in activations:
        contract = circuit_pb2.CircuitActivated()
        contract.CopyFrom(event)
        contract.price.CopyFrom(price("SGD", "1000.00", "0.00", "10.00"))
        contract.effective_time.CopyFrom(_stamp(clock.now - timedelta(hours=1)))
        contracts.append(contract)
    ingest_directly(factory, clock, [*contracts, *records])
    return factory, clock


def _stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def meter_log_count(meter: ServiceProcess, text: str) -> int:
    return meter.log_path.read_text(errors="replace").count(text)


def test_an_unreachable_router_leaves_a_gap_whose_volume_is_kept_out_of_the_p95(
    meter: ServiceProcess, kafka_settings: KafkaSettings, counter_agent: CounterAgent,
    tmp_path: Path,
) -> None:
    circuit_id = f"circuit-gap-{uuid.uuid4().hex[:8]}"
    event = activation(circuit_id, vlan=101, tenant=TENANT)
    publish_activation(kafka_settings.bootstrap, event)
    port = counter_agent.port(SG_ROUTER, f"{SG_INTERFACE}.101")
    reader = SampleReader(kafka_settings.bootstrap, circuit_id)
    try:
        reader.until(lambda _: len(reader.of(SG)) >= 1, "first sample")
        sent = port.send_from_customer(frame_count=200, frame_bytes=1000)
        settled_after(reader, [SG], datetime.now(UTC))
        skipped = f"poll of {SG_ROUTER} skipped"
        before = meter_log_count(meter, skipped)
        counter_agent.cut_off()
        try:
            # Traffic while the router cannot be read: it must survive as a gap volume.
            sent += port.send_from_customer(frame_count=500, frame_bytes=1200)
            until(lambda: meter_log_count(meter, skipped) >= before + 3, "three missed polls")
        finally:
            counter_agent.restore()
        sent += port.send_from_customer(frame_count=50, frame_bytes=1000)
        reader.until(
            lambda _: any(r.gap_volume for r in reader.of(SG)), "the gap volume", 60.0
        )
        settled_after(reader, [SG], datetime.now(UTC))
    finally:
        reader.close()

    records = reader.of(SG)
    volumes = [r for r in records if r.gap_volume]
    samples = [r for r in records if not r.gap_volume]
    # The cut-off is one gap volume of three intervals or more, holding the traffic sent
    # meanwhile. A busy machine can make the meter miss another poll on its own: that is a
    # gap volume too, and every rule below holds for it as well.
    gap = max(volumes, key=lambda r: r.intervals_missed)
    assert gap.intervals_missed >= 3 and gap.bytes_in >= 500 * 1200
    windows = []
    for volume in volumes:
        assert volume.valid and volume.interval_seconds == volume.intervals_missed * INTERVAL_S
        first = volume.interval_start_time.ToDatetime(UTC)
        windows.append((first, first + timedelta(seconds=volume.interval_seconds)))
    # The missed intervals have no sample: never a zero, never an estimate.
    assert not [s for s in samples if any(
        first <= s.interval_start_time.ToDatetime(UTC) < after for first, after in windows)]
    assert all(s.interval_seconds == INTERVAL_S for s in samples)
    # Volume preserved: samples plus the gap volumes are exactly the frames sent.
    assert sum(r.bytes_in for r in records) == sent == 200_000 + 600_000 + 50_000

    factory, _ = billing(tmp_path, reader.samples, [event])
    store = SqlBillingStore(factory)
    start = min(first for first, _ in windows) - timedelta(hours=1)
    end = max(after for _, after in windows) + timedelta(hours=1)
    stored = store.usage(circuit_id, start, end, Side.SINGAPORE)
    gaps = store.gaps([circuit_id], start, end)[(circuit_id, Side.SINGAPORE)]
    assert len(stored) == len(samples)
    assert sorted(g.intervals for g in gaps) == sorted(v.intervals_missed for v in volumes)
    assert intervals_lost(gaps, start, end) == sum(v.intervals_missed for v in volumes)
    assert sum(r.bytes_in for r in stored) + sum(g.bytes_in for g in gaps) == sent
    # The 95th percentile is the present samples' alone.
    present = [Sample(r.interval_start, r.bytes_in, r.bytes_out, r.interval_seconds)
               for r in stored]
    expected = nearest_rank_p95(present)
    assert expected is not None and expected.samples_present == len(samples)
    assert expected.inbound.sample.bytes_in < gap.bytes_in


def test_both_ends_reconciled_a_difference_outside_tolerance_is_reported(
    meter: ServiceProcess, kafka_settings: KafkaSettings, counter_agent: CounterAgent,
    tmp_path: Path,
) -> None:
    ids = {vlan: f"circuit-ends-{vlan}-{uuid.uuid4().hex[:6]}" for vlan in (102, 103)}
    events = [activation(ids[vlan], vlan=vlan, tenant=TENANT) for vlan in ids]
    for event in events:
        publish_activation(kafka_settings.bootstrap, event)
    readers = {vlan: SampleReader(kafka_settings.bootstrap, ids[vlan]) for vlan in ids}
    try:
        for reader in readers.values():
            reader.until(lambda _, r=reader: bool(r.of(SG) and r.of(CQ)), "both ends' first")
        for vlan, delivered in ((102, 1000), (103, 800)):
            # The customer's frames enter at Singapore and leave at Chongqing; on VLAN 103
            # a fifth of them are lost before the Chongqing port.
            sg = counter_agent.port(SG_ROUTER, f"{SG_INTERFACE}.{vlan}")
            cq = counter_agent.port(CQ_ROUTER, f"{CQ_INTERFACE}.{vlan}")
            sg.send_from_customer(frame_count=1000, frame_bytes=1000)
            cq.send_to_customer(frame_count=delivered, frame_bytes=1000)
        sent_at = datetime.now(UTC)
        for reader in readers.values():
            settled_after(reader, [SG, CQ], sent_at)
    finally:
        for reader in readers.values():
            reader.close()

    records = [r for reader in readers.values() for r in reader.samples]
    factory, clock = billing(tmp_path, records, events)
    clock.advance(seconds=1)
    local = clock.now.astimezone(directory().customer(TENANT).time_zone)
    month = BillingMonth(local.year, local.month)
    cycle = BillingCycle(SqlBillingStore(factory), directory(), clock, TOLERANCE)
    summary = list(cycle.run(CycleRequest(month, tenant_ids=[TENANT])))[-1]
    assert isinstance(summary, Summary)

    flagged = {r.circuit_id: r for r in summary.reconciliation_differences}
    assert list(flagged) == [ids[103]]
    outside = flagged[ids[103]]
    assert outside.billed.side is Side.SINGAPORE and outside.other.side is Side.CHONGQING
    assert outside.billed.volume == 1_000_000
    assert outside.other.volume == 800_000
    assert outside.volume_difference_bytes == -200_000
    assert outside.volume_difference_percent == 20
    assert not outside.within_tolerance
    assert any(
        w.kind is WarningKind.RECONCILIATION_DIFFERENCE and w.subject == ids[103]
        and "OUTSIDE" in w.message
        for w in summary.warnings
    )
    assert not any(ids[102] in w.message for w in summary.warnings)

    report = {r.circuit_id: r for r in cycle.reconciler.report(month, TENANT)}
    inside = report[ids[102]]
    assert inside.within_tolerance
    assert inside.billed.volume == inside.other.volume == 1_000_000
    assert inside.p95_difference_mbps == 0
    assert inside.billed.p95_mbps is not None and inside.billed.p95_mbps > 0

    # The evidence is on the flagged circuit's invoice lines, the amount unchanged.
    (invoice_id,) = summary.invoice_ids
    invoice = SqlBillingStore(factory).invoice(invoice_id)
    assert invoice is not None
    evidence = {s.line.circuit_id: s.line.reconciliation for s in invoice.lines
                if s.line.kind is LineKind.MRC}
    assert "OUTSIDE" in evidence[ids[103]] and evidence[ids[102]] == ""
