"""Wiring of the provisioning service process: roles, workers, servicers, migrations.

``IDC_PROVISIONING_ROLE`` picks what the process runs:

* ``all`` (default, ``make run``): the coordinator and both telcos' agents;
* ``coordinator``: the saga coordinator (and the ops API);
* ``agent``: one telco's router agent, ``IDC_PROVISIONING_TELCO`` = ``sg`` or ``cq`` (in
  production each telco's agent runs in that telco's network).

Other settings: ``IDC_PROVISIONING_INVENTORY`` (see inventory.py),
``IDC_PROVISIONING_CONFIRM_TIMEOUT_S`` (confirmed-commit timeout, 120),
``IDC_PROVISIONING_STEP_DEADLINE_S`` (how long the coordinator waits for a reply, 30),
``IDC_PROVISIONING_RETRY_WINDOW_S`` (how long after approval a round that failed for a
passing reason, e.g. an unreachable router, is retried, 600; 0 never retries),
``IDC_PROVISIONING_RETRY_BACKOFF_S`` (first wait between rounds, doubling, 5),
``IDC_PROVISIONING_LEASE_S`` (time-to-live of an agent's lease on a router, renewed four
times as often, 10: how long a dead agent's routers wait for a peer to take them over),
``IDC_PROVISIONING_TOPIC_SUFFIX`` (appended to every topic name, to keep deployments that
share a Kafka cluster apart, e.g. tests; empty by default),
``IDC_PROVISIONING_MAX_REPLY_BYTES`` (the largest message taken from a router, 16 MiB;
read by every router session, see netconf.py),
``IDC_PROVISIONING_DRIFT_INTERVAL_S`` (how often the coordinator's drift watch reads every
router and compares it with what was deployed, 60; 0 turns the watch off; see drift.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import grpc
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy.orm import Session

from idc.provisioning.v1 import provisioning_service_pb2, provisioning_service_pb2_grpc
from services.common.audit_servicer import register_audit
from services.common.config import ConfigError, KafkaSettings, non_negative_int
from services.common.events import BatchEventConsumer, Envelope, ensure_topics, topics
from services.common.events.consumer import BatchHandler, Handler
from services.common.events.envelope import extract_trace_context
from services.common.events.topics import with_dead_letters
from services.common.grpc_server import GrpcApp, Worker
from services.common.metrics import Registration
from services.common.runtime import ConsumerWorker, ServiceRuntime, build_app, run_service
from services.common.service_table import PROVISIONING
from services.common.servicers import register
from services.provisioning.agent.jobs import CommandQueue
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.audit import provisioning_chain
from services.provisioning.coordinator import (
    REGISTRY,
    Coordinator,
    DeadlineWorker,
    SagaTimings,
    Topics,
)
from services.provisioning.domain.circuits import SIDE_OF_TELCO, Side
from services.provisioning.domain.lease import LeaseTerms
from services.provisioning.drift import (
    INTERVAL_SETTING,
    DriftWatch,
    out_of_sync_circuits_per_router,
)
from services.provisioning.inventory import Inventory, load_inventory
from services.provisioning.metrics import register_out_of_sync, register_pending_commits
from services.provisioning.netconf import NetconfSession, max_reply_bytes, read_running
from services.provisioning.ops import ProvisioningOps
from services.provisioning.rendering import Renderer
from services.provisioning.watchdog import SagaWatchdog

MIGRATIONS = PROVISIONING.migrations_dir
ROLES = ("all", "coordinator", "agent")

tracer = trace.get_tracer(__name__)


def each_event(handler: Handler) -> BatchHandler:
    """A poll's events handled in one transaction (one commit and one offset commit per
    poll, not per event), each in a consumer span continuing its producer's trace as the
    per-event consumer's spans do, so the saga's trace stays one parent-linked chain."""

    def handle(session: Session, items: Sequence[tuple[Message, Envelope]]) -> None:
        for event, envelope in items:
            with tracer.start_as_current_span(
                f"{envelope.topic} process",
                context=extract_trace_context(envelope.headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": envelope.topic,
                    "messaging.destination.partition.id": str(envelope.partition),
                    "messaging.kafka.offset": envelope.offset,
                    "messaging.message.id": envelope.event_id,
                    "idc.event_type": envelope.event_type,
                },
            ):
                handler(session, event, envelope)

    return handle


def topics_from_env(env: Mapping[str, str]) -> Topics:
    suffix = env.get("IDC_PROVISIONING_TOPIC_SUFFIX", "").strip()
    return Topics(
        order_events=topics.ORDER_EVENTS + suffix,
        commands={
            Side.SINGAPORE: topics.PROVISIONING_COMMANDS_SG + suffix,
            Side.CHONGQING: topics.PROVISIONING_COMMANDS_CQ + suffix,
        },
        replies=topics.PROVISIONING_REPLIES + suffix,
        circuit_events=topics.CIRCUIT_EVENTS + suffix,
    )


def agent_workers(
    runtime: ServiceRuntime,
    inventory: Inventory,
    renderer: Renderer,
    topic_names: Topics,
    telco: str,
    lease_terms: LeaseTerms,
    reply_cap: int,
) -> list[Worker]:
    devices = inventory.of_telco(telco)
    routers = [
        RouterWorker(
            d,
            NetconfSession(d, max_reply_bytes=reply_cap),
            runtime.session_factory,
            renderer,
            topic_names.replies,
            lease_terms=lease_terms,
        )
        for d in devices
    ]
    by_name = {w.device.name: w for w in routers}
    queue = CommandQueue(telco, by_name, lambda name: by_name[name].wake_event.set())
    commands = ConsumerWorker(
        f"agent-commands-{telco}",
        lambda: BatchEventConsumer(
            [topic_names.commands[SIDE_OF_TELCO[telco]]],
            f"idc-provisioning-agent-{telco}",
            each_event(queue),
            runtime.session_factory,
            runtime.settings.kafka,
            registry=REGISTRY,
        ),
    )
    return [commands, *routers]


def make_app(runtime: ServiceRuntime, env: Mapping[str, str] | None = None) -> GrpcApp:
    env = os.environ if env is None else env
    role = env.get("IDC_PROVISIONING_ROLE", "all").strip() or "all"
    if role not in ROLES:
        raise ConfigError(f"IDC_PROVISIONING_ROLE={role!r}: expected one of {', '.join(ROLES)}")
    telco = env.get("IDC_PROVISIONING_TELCO", "").strip()
    if role == "agent" and telco not in SIDE_OF_TELCO:
        raise ConfigError("IDC_PROVISIONING_TELCO must be sg or cq for IDC_PROVISIONING_ROLE=agent")
    inventory = load_inventory(env)
    renderer = Renderer()
    topic_names = topics_from_env(env)
    timings = SagaTimings(
        confirm_timeout_s=non_negative_int(env, "IDC_PROVISIONING_CONFIRM_TIMEOUT_S", 120) or 120,
        step_deadline_s=float(non_negative_int(env, "IDC_PROVISIONING_STEP_DEADLINE_S", 30) or 30),
        retry_window_s=float(non_negative_int(env, "IDC_PROVISIONING_RETRY_WINDOW_S", 600)),
        retry_backoff_s=float(non_negative_int(env, "IDC_PROVISIONING_RETRY_BACKOFF_S", 5) or 5),
    )
    lease_terms = LeaseTerms(float(non_negative_int(env, "IDC_PROVISIONING_LEASE_S", 10) or 10))
    reply_cap = max_reply_bytes(env)  # a bad value stops the start
    drift_interval_s = non_negative_int(env, INTERVAL_SETTING, 60)
    kafka: KafkaSettings = runtime.settings.kafka
    ensure_topics(
        kafka.bootstrap,
        with_dead_letters(
            [
                topic_names.order_events,
                *topic_names.commands.values(),
                topic_names.replies,
                topic_names.circuit_events,
            ]
        ),
        kafka.topic_partitions,
        kafka.replication_factor,
        security=kafka.security,
    )
    coordinator = Coordinator(inventory, renderer, topic_names, timings, read_running)
    workers: list[Worker] = []
    gauges: list[Registration] = []
    if role in ("all", "coordinator"):
        # Before the consumers and the outbox relay start, so nothing moves a saga while
        # recovery decides from what the routers carry.
        coordinator.recover(runtime.session_factory)
        workers += [
            ConsumerWorker(
                "coordinator",
                lambda: BatchEventConsumer(
                    [topic_names.order_events, topic_names.replies],
                    "idc-provisioning-coordinator",
                    each_event(coordinator),
                    runtime.session_factory,
                    kafka,
                    registry=REGISTRY,
                ),
            ),
            DeadlineWorker(coordinator, runtime.session_factory),
            SagaWatchdog(
                coordinator,
                runtime.session_factory,
                inventory,
                lambda device: NetconfSession(device, timeout_s=10),
                silence_s=timings.confirm_timeout_s + timings.step_deadline_s,
            ),
        ]
        if drift_interval_s:
            workers.append(
                DriftWatch(
                    runtime.session_factory,
                    inventory,
                    topic_names.circuit_events,
                    float(drift_interval_s),
                )
            )
            gauges.append(register_out_of_sync(
                lambda: out_of_sync_circuits_per_router(runtime.session_factory),
                [device.name for device in inventory],
            ))
    agent_telcos = list(SIDE_OF_TELCO) if role == "all" else [telco] if role == "agent" else []
    for agent_telco in agent_telcos:
        workers += agent_workers(
            runtime, inventory, renderer, topic_names, agent_telco, lease_terms, reply_cap
        )
    if agent_telcos:
        gauges += register_pending_commits(
            runtime.session_factory,
            [device.name for t in agent_telcos for device in inventory.of_telco(t)],
        )
    ops = ProvisioningOps(
        inventory, renderer, coordinator, runtime.session_factory, drift_interval_s
    )

    chain = provisioning_chain()
    chain.install(runtime.session_factory)

    def register_servicers(server: grpc.Server) -> Sequence[str]:
        return [
            register(
                server,
                provisioning_service_pb2.DESCRIPTOR,
                "ProvisioningService",
                provisioning_service_pb2_grpc.add_ProvisioningServiceServicer_to_server,
                ops,
            ),
            register_audit(server, chain, runtime.session_factory),
        ]

    app = build_app(runtime, register_servicers, workers)
    app.on_stop += [gauge.cancel for gauge in gauges]
    return app


def main() -> int:
    return run_service(PROVISIONING, make_app)
