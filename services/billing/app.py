"""Wiring of the billing service process: servicers, consumers, migrations.

``IDC_BILLING_ENTITIES_FILE`` points at the billing entities file (default: the one shipped
in services/billing/data/); a malformed file stops the process at start with the reason.

``IDC_BILLING_ROLE`` picks what the process runs: ``all`` (default: the API, the contracts
consumer and the usage ingest), ``api`` (everything but the usage ingest) or ``ingest`` (the
usage ingest alone, beside health and the event admin API). An ``api`` process and an
``ingest`` process side by side make one billing service whose ingest does not share the
API's GIL: a backlog after an outage is then taken at the rate one core allows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import grpc

from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from services.billing.cycle import BillingCycle, utcnow
from services.billing.directory import load_directory
from services.billing.ingest import contracts_consumer, usage_consumer
from services.billing.metrics import register_gauges
from services.billing.servicer import BillingServicer
from services.billing.store import SqlBillingStore
from services.common.config import ConfigError
from services.common.grpc_server import GrpcApp, Worker
from services.common.runtime import ConsumerWorker, ServiceRuntime, build_app, run_service
from services.common.service_table import BILLING
from services.common.servicers import register

MIGRATIONS = BILLING.migrations_dir
ROLES = ("all", "api", "ingest")
ROLE_SETTING = "IDC_BILLING_ROLE"


def role_from_env(env: Mapping[str, str]) -> str:
    role = env.get(ROLE_SETTING, "all").strip() or "all"
    if role not in ROLES:
        raise ConfigError(f"{ROLE_SETTING}={role!r}: expected one of {', '.join(ROLES)}")
    return role


def make_app(runtime: ServiceRuntime, env: Mapping[str, str] | None = None) -> GrpcApp:
    role = role_from_env(os.environ if env is None else env)
    kafka = runtime.settings.kafka
    ingest = ConsumerWorker(
        "usage-ingest", lambda: usage_consumer(runtime.session_factory, kafka)
    )
    if role == "ingest":
        # The ingest writes no outbox rows: the API process's relay publishes billing's.
        return build_app(runtime, lambda _server: [], workers=[ingest], outbox_relay=False)
    directory = load_directory()
    store = SqlBillingStore(runtime.session_factory)
    servicer = BillingServicer(store, BillingCycle(store, directory, utcnow), directory, utcnow)

    def register_servicers(server: grpc.Server) -> Sequence[str]:
        return [
            register(
                server,
                billing_service_pb2.DESCRIPTOR,
                "BillingService",
                billing_service_pb2_grpc.add_BillingServiceServicer_to_server,
                servicer,
            )
        ]

    workers: list[Worker] = [
        ConsumerWorker("contracts", lambda: contracts_consumer(runtime.session_factory, kafka)),
    ]
    if role == "all":
        workers.append(ingest)
    app = build_app(runtime, register_servicers, workers=workers)
    app.on_stop += [gauge.cancel for gauge in register_gauges(runtime.session_factory, utcnow)]
    return app


def main() -> int:
    try:
        load_directory()
    except ConfigError as error:
        print(f"{BILLING.name}: configuration error: {error}")
        return 2
    try:
        role_from_env(os.environ)  # before the migrations: a bad role changes nothing
    except ConfigError as error:
        print(f"{BILLING.name}: configuration error: {error}", file=sys.stderr)
        return 2
    return run_service(BILLING, make_app)
