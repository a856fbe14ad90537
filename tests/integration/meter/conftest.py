"""The counter-serving NETCONF agent for the meter's integration tests (one per session),
serving both edge routers, and the meter process started against it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devstack.counters import CounterAgent, start_counter_agent
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

SG_ROUTER, CQ_ROUTER = "sg-edge-1", "cq-edge-1"
SG_INTERFACE, CQ_INTERFACE = "xe-0/0/1", "ge-1/0/3"
#: The customer interface of the metered circuit on sg-edge-1 (openconfig naming).
METERED_INTERFACE = f"{SG_INTERFACE}.100"
#: VLANs with a veth on both routers: 100 for the first tests, the rest for one each.
VLANS = (100, 101, 102, 103)


@pytest.fixture(scope="session")
def counter_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CounterAgent]:
    with start_counter_agent(
        tmp_path_factory.mktemp("counter-agent"),
        {
            SG_ROUTER: [f"{SG_INTERFACE}.{vlan}" for vlan in VLANS],
            CQ_ROUTER: [f"{CQ_INTERFACE}.{vlan}" for vlan in VLANS],
        },
    ) as agent:
        yield agent


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
    routers_file.write_text(
        dump_routers([counter_agent.router_access(name) for name in (SG_ROUTER, CQ_ROUTER)])
    )
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


def activation(
    circuit_id: str, vlan: int = 100, tenant: str = "tenant-meter"
) -> circuit_pb2.CircuitActivated:
    return circuit_pb2.CircuitActivated(
        event_id=str(uuid.uuid4()),
        circuit_id=circuit_id,
        tenant_id=tenant,
        circuit=common_pb2.CircuitParameters(
            circuit_id=circuit_id,
            tenant_id=tenant,
            a_end=common_pb2.CircuitEndpoint(
                side=side_pb2.SIDE_SINGAPORE,
                router_name=SG_ROUTER,
                interface_name=SG_INTERFACE,
                vlan_id=vlan,
            ),
            z_end=common_pb2.CircuitEndpoint(
                side=side_pb2.SIDE_CHONGQING,
                router_name=CQ_ROUTER,
                interface_name=CQ_INTERFACE,
                vlan_id=vlan,
            ),
            bandwidth_mbps=200,
        ),
        bandwidth_mbps=200,
    )


class SampleReader:
    """Reads idc.usage.samples from the beginning and keeps one circuit's samples."""

    def __init__(self, bootstrap: str, circuit_id: str) -> None:
        self.circuit_id = circuit_id
        # Every record of the circuit, both ends, samples and gap volumes, in arrival order.
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

    def of(self, side: int) -> list[usage_pb2.UsageSample]:
        return [s for s in self.samples if s.side == side]

    def close(self) -> None:
        self._consumer.close()




def publish_activation(bootstrap: str, event: circuit_pb2.CircuitActivated) -> None:
    encoded = encode_event(event, event.circuit_id)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(
            CIRCUIT_EVENTS, key=encoded.key, value=encoded.payload, headers=list(encoded.headers)
        ).get(timeout=10)
    finally:
        producer.close()
