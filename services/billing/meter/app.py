"""Wiring of the meter process: its database, the circuit-event consumer, the poller, the
outbox relay and health (``python -m services.billing.meter``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import grpc

from services.billing.meter.config import MeterSettings, load_routers
from services.billing.meter.service import (
    CIRCUIT_EVENT_REGISTRY,
    CircuitEventHandler,
    Meter,
    MeterWorker,
)
from services.billing.meter.source import NetconfCounterSource, RouterAccess
from services.billing.meter.store import MeterStore
from services.common.config import ConfigError
from services.common.events import EventConsumer
from services.common.events.topics import CIRCUIT_EVENTS
from services.common.grpc_server import GrpcApp
from services.common.runtime import ConsumerWorker, ServiceRuntime, build_app, run_service
from services.common.service_table import METER

MIGRATIONS = METER.migrations_dir


def register_servicers(_server: grpc.Server) -> Sequence[str]:
    # The meter has no API of its own: it serves health and reflection only.
    return []


def make_app(
    runtime: ServiceRuntime, settings: MeterSettings, routers: Mapping[str, RouterAccess]
) -> GrpcApp:
    kafka = runtime.settings.kafka
    store = MeterStore()
    source = NetconfCounterSource(routers)
    circuit_events = ConsumerWorker(
        "circuit-events",
        lambda: EventConsumer(
            [CIRCUIT_EVENTS],
            settings.consumer_group,
            CircuitEventHandler(store, settings.sides, routers=list(routers)),
            runtime.session_factory,
            kafka,
            registry=CIRCUIT_EVENT_REGISTRY,
        ),
    )
    meter = Meter(runtime.session_factory, source, settings.interval_s, store=store)
    return build_app(
        runtime,
        register_servicers,
        workers=[circuit_events, MeterWorker(meter, source, settings.interval_s)],
    )


def main() -> int:
    try:
        settings = MeterSettings.from_env()
        routers = load_routers(settings.routers_file)
    except ConfigError as error:
        print(f"{METER.name}: configuration error: {error}", file=sys.stderr)
        return 2
    return run_service(METER, lambda runtime: make_app(runtime, settings, routers))
