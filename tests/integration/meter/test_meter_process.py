"""`python -m services.billing.meter` end to end: a CircuitActivated on the real broker
starts metering; frames sent through the circuit's veth come back as UsageSample events
whose bytes add up exactly to what was sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devstack.counters import AGENT_REFRESH_S, CounterAgent
from devstack.process import free_port
from devstack.services import ServiceProcess, start_service, wait_serving
from idc.events.v1 import circuit_pb2, common_pb2, usage_pb2
from idc.type.v1 import side_pb2
from services.billing.meter.config import dump_routers
from services.common.config import KafkaSettings
from services.common.events import encode_event
from services.common.events.topics import (
    CIRCUIT_EVENTS,
    USAGE_SAMPLES,
    ensure_topics,
    with_dead_letters,
)
from services.common.tokens import HarnessKeys
from tests.integration.meter.conftest import METERED_INTERFACE

pytestmark = pytest.mark.integration

INTERVAL_S = 1


@pytest.fixture
def meter(
    tmp_path: Path,
    database_url: str,
    kafka_settings: KafkaSettings,
    counter_agent: CounterAgent,
) -> Iterator[ServiceProcess]:
    ensure_topics(
        kafka_settings.bootstrap,
        with_dead_letters([CIRCUIT_EVENTS, USAGE_SAMPLES]),
        kafka_settings.topic_partitions,
        kafka_settings.replication_factor,
    )
    routers_file = tmp_path / "meter-routers.toml"
    routers_file.write_text(dump_routers([counter_agent.router_access("sg-edge-1")]))
    address = f"127.0.0.1:{free_port()}"
    env = {
        "IDC_METER_DATABASE_URL": database_url,
        "IDC_METER_INTERVAL_S": str(INTERVAL_S),
        "IDC_METER_ROUTERS_FILE": str(routers_file),
        "IDC_METER_CONSUMER_GROUP": f"meter-{uuid.uuid4().hex[:8]}",
        "IDC_VAR_DIR": str(tmp_path),
        "IDC_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
        "IDC_KAFKA_SESSION_TIMEOUT_MS": str(kafka_settings.session_timeout_ms),
        "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka_settings.heartbeat_interval_ms),
        "IDC_KAFKA_FETCH_MAX_WAIT_MS": str(kafka_settings.fetch_max_wait_ms),
        "IDC_RELAY_POLL_INTERVAL_S": "0.05",
        "IDC_LOG_FORMAT": "text",
        **HarnessKeys.generate().env(),
    }
    service = start_service("billing.meter", address, env, tmp_path / "meter.log")
    try:
        wait_serving(service)
        yield service
    finally:
        assert service.terminate() == 0, service.log_path.read_text()[-3000:]


def activation(circuit_id: str) -> circuit_pb2.CircuitActivated:
    return circuit_pb2.CircuitActivated(
        event_id=str(uuid.uuid4()),
        circuit_id=circuit_id,
        tenant_id="tenant-meter",
        circuit=common_pb2.CircuitParameters(
            circuit_id=circuit_id,
            tenant_id="tenant-meter",
            a_end=common_pb2.CircuitEndpoint(
                side=side_pb2.SIDE_SINGAPORE,
                router_name="sg-edge-1",
                interface_name="xe-0/0/1",
                vlan_id=100,
            ),
            z_end=common_pb2.CircuitEndpoint(
                side=side_pb2.SIDE_CHONGQING,
                router_name="cq-edge-1",
                interface_name="ge-1/0/3",
                vlan_id=100,
            ),
            bandwidth_mbps=200,
        ),
        bandwidth_mbps=200,
    )


class SampleReader:
    """Reads idc.usage.samples from the beginning and keeps one circuit's samples."""

    def __init__(self, bootstrap: str, circuit_id: str) -> None:
        self.circuit_id = circuit_id
        self.samples: list[usage_pb2.UsageSample] = []
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        partitions = self._consumer.partitions_for_topic(USAGE_SAMPLES) or set()
        assigned = [TopicPartition(USAGE_SAMPLES, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_beginning(*assigned)

    def until(
        self,
        done: Callable[[list[usage_pb2.UsageSample]], bool],
        what: str,
        deadline_s: float = 30.0,
    ) -> None:
        deadline = time.monotonic() + deadline_s
        while not done(self.samples):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {deadline_s} s; got {self.samples}")
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    sample = usage_pb2.UsageSample.FromString(record.value)
                    if sample.circuit_id == self.circuit_id:
                        assert record.key == self.circuit_id.encode()
                        self.samples.append(sample)

    def close(self) -> None:
        self._consumer.close()


def test_meter_publishes_the_bytes_sent_through_the_circuit(
    meter: ServiceProcess, kafka_settings: KafkaSettings, counter_agent: CounterAgent
) -> None:
    circuit_id = f"circuit-{uuid.uuid4().hex[:12]}"
    event = activation(circuit_id)
    encoded = encode_event(event, circuit_id)
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap, acks="all")
    producer.send(
        CIRCUIT_EVENTS, key=encoded.key, value=encoded.payload, headers=list(encoded.headers)
    ).get(timeout=10)
    producer.close()

    reader = SampleReader(kafka_settings.bootstrap, circuit_id)
    try:
        # The first sample means the meter knows the circuit and has a baseline reading.
        reader.until(lambda samples: len(samples) >= 1, "first sample")
        port = counter_agent.port(METERED_INTERFACE)
        sent_in = port.send_from_customer(frame_count=300, frame_bytes=1200)
        sent_out = port.send_to_customer(frame_count=120, frame_bytes=100)
        sent_at = datetime.now(UTC)
        # Wait for samples past the send plus the agent's counter refresh: the readings
        # that close them include every frame sent.
        settled = sent_at + timedelta(seconds=AGENT_REFRESH_S + 2 * INTERVAL_S)
        reader.until(
            lambda samples: samples[-1].interval_start_time.ToDatetime(UTC) >= settled,
            "sample after the traffic",
        )
    finally:
        reader.close()

    samples = reader.samples
    starts = [s.interval_start_time.ToDatetime(UTC) for s in samples]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts), "one sample per interval"
    assert all(s.valid for s in samples)
    # Missed polls are spread, never dropped: the bytes add up exactly to the frames sent
    # (Ethernet header included, no FCS, which is what the kernel counts on a veth).
    assert sum(s.bytes_in for s in samples) == sent_in == 360_000
    assert sum(s.bytes_out for s in samples) == sent_out == 12_000
    assert any(s.bytes_in > 0 for s in samples)
    first = samples[0]
    assert first.tenant_id == "tenant-meter"
    assert first.router_name == "sg-edge-1"
    assert first.side == side_pb2.SIDE_SINGAPORE
    assert first.interface_name == METERED_INTERFACE
    assert first.interval_seconds == INTERVAL_S
    assert first.read_time.ToDatetime(UTC) >= starts[0] + timedelta(seconds=INTERVAL_S)
