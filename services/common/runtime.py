"""Process bootstrap shared by every service: settings, logging, telemetry, database, server.

A service's ``__main__`` calls ``run_service`` with what is its own (name, port, migrations,
servicers); everything else is decided here once.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.common import certificate_expiry, db
from services.common import metric_catalogue as catalogue
from services.common.call_limits import LimitSettings
from services.common.config import ConfigError, ServiceSettings
from services.common.events import EventConsumer, OutboxRelay
from services.common.events.admin_servicer import register_event_admin
from services.common.events.metrics import ConsumerLag, OutboxBacklog
from services.common.events.topics import ALL_TOPICS, ensure_topics, revocation_topic_configs
from services.common.grpc_server import AlarmCheck, GrpcApp, Worker
from services.common.logs import configure_logging
from services.common.metrics import Registration, observe, one
from services.common.revocations import RevocationReader
from services.common.service_table import ServiceEntry
from services.common.telemetry import Telemetry, configure_telemetry
from services.common.tls import ClientTls, ServerTls
from services.common.tokens import TokenSettings, TokenVerifier

log = logging.getLogger(__name__)


@dataclass
class ServiceRuntime:
    """What a service's own code gets: settings, its database and the token verifier."""

    settings: ServiceSettings
    engine: Engine
    session_factory: sessionmaker[Session]
    token_settings: TokenSettings
    telemetry: Telemetry
    tls: ServerTls = field(default_factory=ServerTls)
    # Made from token_settings; build_app feeds its revoked set from the broker.
    tokens: TokenVerifier = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = TokenVerifier(self.token_settings.keys)


def broker_reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """True when at least one bootstrap broker accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


def create_topics(settings: ServiceSettings, max_token_ttl_s: int = TokenSettings.max_ttl_s
                  ) -> None:
    """Create the project's topics and their dead-letter topics if they are missing.

    Where topics are managed elsewhere (Strimzi KafkaTopic resources) this finds them all
    present. A broker that is down now is not fatal: the health status shows it.
    """
    kafka = settings.kafka
    try:
        ensure_topics(
            kafka.bootstrap, ALL_TOPICS, kafka.topic_partitions, kafka.replication_factor,
            configs=revocation_topic_configs(max_token_ttl_s),
            security=kafka.security,
        )
    except Exception as error:
        log.warning("could not check the topics on %s: %s", kafka.bootstrap, error)


def bootstrap(name: str, default_port: int, migrations_dir: Path) -> ServiceRuntime:
    settings = ServiceSettings.from_env(name, default_port)
    if not settings.kafka.bootstrap:
        raise ConfigError(
            "IDC_KAFKA_BOOTSTRAP is not set: point it at a Kafka broker (host:port), "
            "or start everything with `make run`, which starts one"
        )
    token_settings = TokenSettings.from_env()
    tls = ServerTls.from_env(name)
    configure_logging(name, settings.log_level, settings.log_format)
    telemetry = configure_telemetry(name)
    db.migrate(settings.database_url, migrations_dir)
    create_topics(settings, token_settings.max_ttl_s)
    engine = db.make_engine(settings.database_url)
    factory = db.make_session_factory(engine)
    return ServiceRuntime(
        settings=settings,
        engine=engine,
        session_factory=factory,
        token_settings=token_settings,
        telemetry=telemetry,
        tls=tls,
    )


class OutboxRelayWorker(Worker):
    """Publishes the service's own outbox; every service runs one."""

    name = "outbox-relay"

    def __init__(self, runtime: ServiceRuntime) -> None:
        self._relay = OutboxRelay(
            runtime.session_factory,
            runtime.settings.kafka,
            poll_interval_s=runtime.settings.relay_poll_interval_s,
        )
        self._gauges = OutboxBacklog(runtime.session_factory).register()

    def run(self, stop: threading.Event) -> None:
        self._relay.run(stop)

    def close(self) -> None:
        for gauge in self._gauges:
            gauge.cancel()
        self._relay.close()


class ConsumerWorker(Worker):
    """Runs one EventConsumer as a background worker of the service.

    The consumer is made in the thread that polls it: a KafkaConsumer is not thread-safe (a
    stuck consumer recreates its KafkaConsumer in that thread too). Alarm
    ``<name>-unassigned`` is raised while the consumer has waited too long for partitions
    (services/common/events/assignment.py says why that is an alarm, not a health check).
    """

    def __init__(self, name: str, make_consumer: Callable[[], EventConsumer]) -> None:
        self.name = name
        self._make_consumer = make_consumer
        self._consumer: EventConsumer | None = None
        self._lag: ConsumerLag | None = None
        self._gauges: list[Registration] = []

    def alarms(self) -> dict[str, AlarmCheck]:
        return {f"{self.name}-unassigned": self._unassigned}

    def _unassigned(self) -> Sequence[str]:
        consumer = self._consumer
        return [] if consumer is None else consumer.unassigned_alarm()

    def run(self, stop: threading.Event) -> None:
        consumer = self._consumer = self._make_consumer()
        self._lag = ConsumerLag(consumer.kafka_settings, consumer.group_id, consumer.topics)
        self._gauges = [
            self._lag.register(),
            observe(
                catalogue.PARTITIONS_ASSIGNED,
                lambda: one(
                    consumer.partitions_assigned,
                    **{"messaging.consumer.group.name": consumer.group_id},
                ),
            ),
        ]
        consumer.run(stop)

    def close(self) -> None:
        for gauge in self._gauges:
            gauge.cancel()
        if self._lag is not None:
            self._lag.close()
        if self._consumer is not None:
            self._consumer.close()


def build_app(
    runtime: ServiceRuntime,
    register: Callable[[grpc.Server], Sequence[str]],
    workers: Sequence[Worker] = (),
    *,
    outbox_relay: bool = True,
) -> GrpcApp:
    """The service's gRPC app with health checks on its database and broker, its outbox
    relay (unless ``outbox_relay`` is false: a process of the service that writes no outbox
    rows while another runs the relay), its token revocation reader, the event admin API
    (services/common/events/admin.py) and its own ``workers``."""
    settings = runtime.settings
    certificates = certificate_expiry.register(certificate_expiry.configured_certificates(
        ClientTls.from_env(), runtime.tls, settings.kafka.security
    ))

    def register_all(server: grpc.Server) -> Sequence[str]:
        return [
            *register(server),
            register_event_admin(server, runtime.session_factory, settings.kafka),
        ]

    return GrpcApp(
        settings=settings,
        register=register_all,
        tokens=runtime.tokens,
        limits=LimitSettings.from_env(),
        checks={
            "database": lambda: db.ping(runtime.engine),
            "broker": lambda: broker_reachable(settings.kafka.bootstrap),
        },
        workers=[
            *([OutboxRelayWorker(runtime)] if outbox_relay else []),
            RevocationReader(runtime.tokens.revoked, settings.kafka,
                             runtime.token_settings.revocation_stale_s),
            *workers,
        ],
        on_stop=[
            runtime.engine.dispose, runtime.telemetry.shutdown,
            *(gauge.cancel for gauge in certificates),
        ],
        tls=runtime.tls,
    )


def run_service(service: ServiceEntry, make_app: Callable[[ServiceRuntime], GrpcApp]) -> int:
    """Entry point of ``python -m services.<name>``; returns the process exit code."""
    name = service.name
    try:
        runtime = bootstrap(name, service.default_port, service.migrations_dir)
        app = make_app(runtime)
    except ConfigError as error:
        print(f"{name}: configuration error: {error}", file=sys.stderr)
        return 2
    return app.serve_forever()
