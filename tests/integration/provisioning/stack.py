"""The provisioning service as processes (`python -m services.provisioning`) for end-to-end
tests: order events in through a Kafka producer, circuit events read back, routers read
directly. Every stack uses topics of its own (IDC_PROVISIONING_TOPIC_SUFFIX) and one SQLite
database per process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.netconf import Router
from devstack.process import free_port
from devstack.services import ServiceProcess, start_service, terminate_all, wait_serving
from idc.events.v1 import circuit_pb2, common_pb2, order_pb2, provisioning_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from idc.provisioning.v1 import provisioning_service_pb2_grpc as pb_grpc
from idc.type.v1 import money_pb2
from services.common.auth import Principal, Role
from services.common.db import make_engine, make_session_factory
from services.common.events import EventRegistry, decode_record, encode_event
from services.common.tokens import HarnessKeys
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from services.provisioning.tables import LogEntry
from tests.integration.provisioning.helpers import device_of, remove_vlans, subinterfaces, wait_for

CIRCUIT_EVENTS = (
    circuit_pb2.CircuitActivated,
    circuit_pb2.CircuitModified,
    circuit_pb2.CircuitDisconnected,
    circuit_pb2.ProvisioningFailed,
    provisioning_pb2.ProvisioningPlanned,
)
OUTCOMES = CIRCUIT_EVENTS[:4]
KEYS = HarnessKeys.generate()
DRIFT_EVENTS = (circuit_pb2.DriftDetected, circuit_pb2.DriftCleared)
REGISTRY = EventRegistry([*CIRCUIT_EVENTS, *DRIFT_EVENTS, provisioning_pb2.ProvisioningProgress])
PRICE = common_pb2.PriceTerms(
    currency_code="SGD",
    mrc=money_pb2.Money(currency_code="SGD", amount="1250.00"),
    term_months=12,
)
PLATFORM_OF_SIDE = {Side.SINGAPORE: "openconfig", Side.CHONGQING: "cq-vendor"}
# Short Kafka group timings and a fast relay keep every hop well under a second.
FAST = {
    "IDC_KAFKA_SESSION_TIMEOUT_MS": "2000",
    "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    # A waiting fetch is answered when a record arrives; the relay wakes on its own
    # commits: neither needs to spin for a fast hop.
    "IDC_KAFKA_FETCH_MAX_WAIT_MS": "500",
    "IDC_KAFKA_TOPIC_PARTITIONS": "3",
    "IDC_GRACE_PERIOD_S": "2",
    "IDC_LOG_FORMAT": "text",
    # The drift watch reads every router; only the tests of it turn it on.
    "IDC_PROVISIONING_DRIFT_INTERVAL_S": "0",
}


def approvals_for(
    operation: Operation, params: common_pb2.CircuitParameters
) -> list[order_pb2.ApprovedPayload]:
    """What both telcos approve: the hash of each router's payload as rendered now."""
    renderer = Renderer()
    return [
        order_pb2.ApprovedPayload(
            side=side.value,
            payload_sha256=renderer.render(platform, operation, circuit_end(params, side)).sha256,
        )
        for side, platform in PLATFORM_OF_SIDE.items()
    ]


class Stack:
    """Processes of the provisioning service sharing one inventory, topics and routers."""

    def __init__(
        self, bootstrap: str, work: Path, routers: Iterable[Router], **settings: str
    ) -> None:
        self.work = work
        self.routers = list(routers)
        self.suffix = f".t{uuid.uuid4().hex[:8]}"
        devstack = work / "devstack.json"
        devstack.write_text(json.dumps({"routers": [self._router_entry(r) for r in self.routers]}))
        self.env = {
            **FAST,
            "IDC_KAFKA_BOOTSTRAP": bootstrap,
            "IDC_PROVISIONING_INVENTORY": "devstack",
            "IDC_DEVSTACK_FILE": str(devstack),
            "IDC_PROVISIONING_TOPIC_SUFFIX": self.suffix,
            "IDC_VAR_DIR": str(work),
            **KEYS.env(),
            **settings,
        }
        self.processes: dict[str, ServiceProcess] = {}
        self.producer = KafkaProducer(bootstrap_servers=bootstrap)
        self.consumer = KafkaConsumer(
            "idc.circuit.events" + self.suffix,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.events: list[Message] = []
        self.sessions = {r.name: NetconfSession(device_of(r)) for r in self.routers}
        self.vlans: list[int] = []
        self.token = ""
        self.api = ""
        self._factories: dict[str, sessionmaker[Session]] = {}

    @staticmethod
    def _router_entry(router: Router) -> dict[str, Any]:
        return {
            "name": router.name,
            "telco": router.telco,
            "platform": router.platform,
            "host": router.host,
            "port": router.port,
            "username": router.username,
            "key_path": str(router.key_path),
            "known_hosts_path": str(router.known_hosts_path),
        }

    # -- processes ----------------------------------------------------------------------

    def db_url(self, name: str) -> str:
        return f"sqlite:///{self.work / (name + '.db')}"

    def database(self, name: str) -> sessionmaker[Session]:
        if name not in self._factories:
            self._factories[name] = make_session_factory(make_engine(self.db_url(name)))
        return self._factories[name]

    def launch(self, processes: dict[str, dict[str, str]]) -> None:
        """Start each named process (its own database and log, ``settings`` on top of the
        stack's) and wait until all serve; the first process ever started serves the API
        the tests call."""
        for name, settings in processes.items():
            env = {**self.env, "IDC_PROVISIONING_DATABASE_URL": self.db_url(name), **settings}
            listen = f"127.0.0.1:{free_port('127.0.0.1')}"
            self.processes[name] = start_service(
                "provisioning", listen, env, self.work / f"{name}.log"
            )
            self.api = self.api or name
        for name in processes:
            wait_serving(self.processes[name])
        if not self.token:
            self.token = KEYS.mint(Principal("ops-sg-1", Role.OPS, telco="sg"))

    def close(self) -> None:
        terminate_all(self.processes.values())
        for session in self.sessions.values():
            try:
                remove_vlans(session, self.vlans)
            finally:
                session.close()
        self.producer.close()
        self.consumer.close()

    # -- order events in, circuit events out --------------------------------------------

    def vlan(self, value: int) -> int:
        self.vlans.append(value)
        return value

    def send(self, message: Message, key: str) -> None:
        encoded = encode_event(message, key)
        self.producer.send(
            "idc.order.events" + self.suffix,
            key=encoded.key,
            value=encoded.payload,
            headers=encoded.headers,
        )
        self.producer.flush()

    def approve(
        self,
        operation: Operation,
        params: common_pb2.CircuitParameters,
        previous: common_pb2.CircuitParameters | None = None,
        *,
        approvals: list[order_pb2.ApprovedPayload] | None = None,
        order_id: str = "",
    ) -> str:
        """Publish OrderApproved (approving the payloads as rendered now); its order id."""
        event = order_pb2.OrderApproved(
            event_id=str(uuid.uuid4()),
            order_id=order_id or f"order-{uuid.uuid4().hex[:8]}",
            operation=operation.value,
            circuit=params,
            approvals=approvals if approvals is not None else approvals_for(operation, params),
            price=PRICE,
        )
        if previous is not None:
            event.previous_circuit.CopyFrom(previous)
        self.send(event, params.circuit_id)
        return event.order_id

    def poll_events(self) -> None:
        for records in self.consumer.poll(timeout_ms=200).values():
            for record in records:
                self.events.append(decode_record(record, REGISTRY)[0])

    def events_for(
        self, circuit_id: str, kinds: tuple[type[Message], ...] = OUTCOMES
    ) -> list[Message]:
        return [
            e
            for e in self.events
            if isinstance(e, kinds) and getattr(e, "circuit_id", "") == circuit_id
        ]

    def outcome(
        self,
        circuit_id: str,
        kinds: tuple[type[Message], ...] = OUTCOMES,
        count: int = 1,
        timeout: float = 60,
    ) -> list[Message]:
        def poll() -> list[Message] | None:
            self.poll_events()
            found = self.events_for(circuit_id, kinds)
            return found if len(found) >= count else None

        return wait_for(f"{count} event(s) for {circuit_id}", poll, timeout=timeout)

    # -- reading back ---------------------------------------------------------------------

    def carries(self, params: common_pb2.CircuitParameters) -> dict[str, bool]:
        """Per router: whether its running configuration has the circuit's sub-interface."""
        found = {}
        for side in (Side.SINGAPORE, Side.CHONGQING):
            end = circuit_end(params, side)
            found[end.router_name] = (end.interface, end.vlan) in subinterfaces(
                self.sessions[end.router_name]
            )
        return found

    def log(self, circuit_id: str, name: str = "") -> list[LogEntry]:
        """The provisioning log of one process (default: the API's)."""
        with self.database(name or self.api)() as db:
            return list(
                db.scalars(
                    select(LogEntry).where(LogEntry.circuit_id == circuit_id).order_by(LogEntry.id)
                )
            )

    def stub(self) -> Any:
        channel = grpc.insecure_channel(self.processes[self.api].address)
        return pb_grpc.ProvisioningServiceStub(channel)

    def metadata(self, subject: str = "", telco: str = "") -> list[tuple[str, str]]:
        """The API's metadata: the stack's token (ops-sg-1), or one for the ops principal
        ``subject`` of ``telco``."""
        token = self.token
        if subject:
            token = KEYS.mint(Principal(subject, Role.OPS, telco=telco))
        return [("authorization", f"Bearer {token}")]

    def repair(self, circuit_id: str) -> pb.Repair:
        """A Redeploy of ``circuit_id`` requested by ops-sg-1 and approved by each telco's
        ops for its own router (ops-cq-1, and ops-sg-2 for the requester's telco)."""
        stub = self.stub()
        repair = stub.Redeploy(
            pb.RedeployRequest(circuit_id=circuit_id), metadata=self.metadata()
        ).repair
        for subject, telco in (("ops-cq-1", "cq"), ("ops-sg-2", "sg")):
            own = next(p for p in repair.payloads if p.telco_id == telco)
            approved = stub.ApproveRepair(
                pb.ApproveRepairRequest(repair_id=repair.repair_id, payload_sha256=own.sha256),
                metadata=self.metadata(subject, telco),
            ).repair
        assert approved.state == pb.REPAIR_STATE_STARTED, approved
        return approved  # type: ignore[no-any-return]


@contextmanager
def launched(
    bootstrap: str,
    work: Path,
    routers: Iterable[Router],
    roles: Mapping[str, dict[str, str]] | None = None,
    **settings: str,
) -> Iterator[Stack]:
    """A Stack with its processes started (one process with every role by default)."""
    stack = Stack(bootstrap, work, routers, **settings)
    try:
        stack.launch(dict(roles) if roles is not None else {"all": {}})
        yield stack
    finally:
        stack.close()
