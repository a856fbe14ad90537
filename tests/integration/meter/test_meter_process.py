"""`python -m services.billing.meter` end to end: a CircuitActivated on the real broker
starts metering; frames sent through the circuit's veth come back as UsageSample events
whose bytes add up exactly to what was sent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from devstack.counters import AGENT_REFRESH_S, CounterAgent
from devstack.services import ServiceProcess
from idc.type.v1 import side_pb2
from services.common.config import KafkaSettings
from tests.integration.meter.conftest import (
    CQ_INTERFACE,
    CQ_ROUTER,
    INTERVAL_S,
    METERED_INTERFACE,
    SG_ROUTER,
    SampleReader,
    activation,
    publish_activation,
)

pytestmark = pytest.mark.integration


def test_meter_publishes_the_bytes_sent_through_the_circuit(
    meter: ServiceProcess, kafka_settings: KafkaSettings, counter_agent: CounterAgent
) -> None:
    circuit_id = f"circuit-{uuid.uuid4().hex[:12]}"
    publish_activation(kafka_settings.bootstrap, activation(circuit_id))

    reader = SampleReader(kafka_settings.bootstrap, circuit_id)
    try:
        # The first sample means the meter knows the circuit and has a baseline reading.
        reader.until(
            lambda _: all(reader.of(side) for side in (side_pb2.SIDE_SINGAPORE,
                                                       side_pb2.SIDE_CHONGQING)),
            "first sample of both ends",
        )
        port = counter_agent.port(SG_ROUTER, METERED_INTERFACE)
        sent_in = port.send_from_customer(frame_count=300, frame_bytes=1200)
        sent_out = port.send_to_customer(frame_count=120, frame_bytes=100)
        sent_at = datetime.now(UTC)
        # Wait for samples past the send plus the agent's counter refresh: the readings
        # that close them include every frame sent.
        settled = sent_at + timedelta(seconds=AGENT_REFRESH_S + 2 * INTERVAL_S)
        reader.until(
            lambda _: all(
                reader.of(side)[-1].interval_start_time.ToDatetime(UTC) >= settled
                for side in (side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING)
            ),
            "sample of both ends after the traffic",
        )
    finally:
        reader.close()

    samples = reader.of(side_pb2.SIDE_SINGAPORE)
    starts = [s.interval_start_time.ToDatetime(UTC) for s in samples]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts), "one sample per circuit, side and interval"
    assert all(s.valid for s in samples)
    # Missed polls (a busy machine) are gap volumes, never dropped: samples and gap volumes
    # add up exactly to the frames sent (Ethernet header included, no FCS, which is what
    # the kernel counts on a veth).
    assert sum(s.bytes_in for s in samples) == sent_in == 360_000
    assert sum(s.bytes_out for s in samples) == sent_out == 12_000
    assert any(s.bytes_in > 0 for s in samples)
    first = samples[0]
    assert first.tenant_id == "tenant-meter"
    assert first.router_name == "sg-edge-1"
    assert first.side == side_pb2.SIDE_SINGAPORE
    assert first.interface_name == METERED_INTERFACE
    assert first.interval_seconds == INTERVAL_S * max(first.intervals_missed, 1)
    assert first.read_time.ToDatetime(UTC) >= starts[0] + timedelta(seconds=INTERVAL_S)
    # The Chongqing end is read too: its own router and sub-interface, nothing sent there.
    far = reader.of(side_pb2.SIDE_CHONGQING)
    assert {(s.router_name, s.interface_name) for s in far} == {(CQ_ROUTER, f"{CQ_INTERFACE}.100")}
    assert sum(s.bytes_in + s.bytes_out for s in far) == 0
