"""Wiring of the billing service process: servicers, consumers, migrations.

``IDC_BILLING_ENTITIES_FILE`` points at the billing entities file (default: the one shipped
in services/billing/data/); a malformed file, or an entity whose telco has no end the meter
reads, stops the process at start with the reason.
Billing runs and closes are jobs of the ``billing-jobs`` worker (jobs.py).
``IDC_BILLING_RECONCILE_TOLERANCE_PERCENT`` is the reconciliation tolerance (reconcile.py).

``IDC_BILLING_ROLE`` picks what the process runs: ``all`` (default: the API, the contracts
consumer, the job worker and the usage ingest), ``api`` (everything but the usage ingest) or
``ingest`` (the usage ingest alone, beside health and the event admin API). An ``api`` process
and an ``ingest`` process side by side make one billing service whose ingest does not share
the API's GIL: a backlog after an outage is then taken at the rate one core allows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import grpc

from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from services.billing.close import BillingClose, UsageLag
from services.billing.cycle import BillingCycle, utcnow
from services.billing.directory import ENTITIES_ENV, load_directory
from services.billing.domain.ends import billed_side
from services.billing.domain.entities import BillingDirectory
from services.billing.ingest import contracts_consumer, usage_consumer
from services.billing.job_store import SqlJobStore
from services.billing.jobs import JobRunner, JobSettings
from services.billing.metrics import register_gauges
from services.billing.reconcile import DEFAULT_TOLERANCE, tolerance_from_env
from services.billing.servicer import BillingServicer
from services.billing.store import SqlBillingStore
from services.billing.usage_lag import BrokerUsageLag
from services.common.config import ConfigError
from services.common.errors import InvalidArgument
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


def checked_directory() -> BillingDirectory:
    """The billing entities, each with an end to bill (ConfigError otherwise)."""
    directory = load_directory()
    for entity in directory.entities.values():
        try:
            billed_side(entity)
        except InvalidArgument as error:
            raise ConfigError(f"{ENTITIES_ENV}: {error.message}") from None
    return directory


def make_app(runtime: ServiceRuntime, env: Mapping[str, str] | None = None) -> GrpcApp:
    role = role_from_env(os.environ if env is None else env)
    kafka = runtime.settings.kafka
    ingest = ConsumerWorker(
        "usage-ingest", lambda: usage_consumer(runtime.session_factory, kafka)
    )
    if role == "ingest":
        # The ingest writes no outbox rows: the API process's relay publishes billing's.
        return build_app(runtime, lambda _server: [], workers=[ingest], outbox_relay=False)
    directory = checked_directory()
    store = SqlBillingStore(runtime.session_factory)
    jobs = SqlJobStore(runtime.session_factory)
    usage_lag = BrokerUsageLag(runtime.settings.kafka)
    runner, close = billing_close(
        store, jobs, directory, JobSettings.from_env(os.environ), usage_lag,
        tolerance_percent=tolerance_from_env(),
    )
    servicer = BillingServicer(store, close, jobs, directory, utcnow)

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
        runner,
    ]
    if role == "all":
        workers.append(ingest)
    app = build_app(runtime, register_servicers, workers=workers)
    app.on_stop += [gauge.cancel for gauge in register_gauges(runtime.session_factory, utcnow)]
    app.on_stop.append(usage_lag.close)
    return app


def billing_close(
    store: SqlBillingStore, jobs: SqlJobStore, directory: BillingDirectory,
    settings: JobSettings, usage_lag: UsageLag, clock: Callable[[], datetime] = utcnow,
    tolerance_percent: Decimal = DEFAULT_TOLERANCE,
) -> tuple[JobRunner, BillingClose]:
    """The job worker and the close application whose work it runs (the cycle's summaries
    carry the reconciliation differences among their warnings)."""
    runner = JobRunner(jobs, clock, settings)
    close = BillingClose(
        BillingCycle(store, directory, clock, tolerance_percent), store, jobs, runner,
        directory, usage_lag, clock,
    )
    runner.register(close.handlers())
    return runner, close


def main() -> int:
    try:
        checked_directory()
        tolerance_from_env()
    except ConfigError as error:
        print(f"{BILLING.name}: configuration error: {error}")
        return 2
    try:
        role_from_env(os.environ)  # before the migrations: a bad role changes nothing
    except ConfigError as error:
        print(f"{BILLING.name}: configuration error: {error}", file=sys.stderr)
        return 2
    return run_service(BILLING, make_app)
