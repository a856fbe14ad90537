"""Wiring of the billing service process: servicers, consumers, migrations.

``IDC_BILLING_ENTITIES_FILE`` points at the billing entities file (default: the one shipped
in services/billing/data/); a malformed file stops the process at start with the reason.
Billing runs and closes are jobs of the ``billing-jobs`` worker (jobs.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime

import grpc

from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from services.billing.close import BillingClose, NoReconciliation, UsageLag
from services.billing.cycle import BillingCycle, utcnow
from services.billing.directory import load_directory
from services.billing.domain.entities import BillingDirectory
from services.billing.ingest import contracts_consumer, usage_consumer
from services.billing.job_store import SqlJobStore
from services.billing.jobs import JobRunner, JobSettings
from services.billing.metrics import register_gauges
from services.billing.servicer import BillingServicer
from services.billing.store import SqlBillingStore
from services.billing.usage_lag import BrokerUsageLag
from services.common.config import ConfigError
from services.common.grpc_server import GrpcApp
from services.common.runtime import ConsumerWorker, ServiceRuntime, build_app, run_service
from services.common.service_table import BILLING
from services.common.servicers import register

MIGRATIONS = BILLING.migrations_dir


def make_app(runtime: ServiceRuntime) -> GrpcApp:
    directory = load_directory()
    store = SqlBillingStore(runtime.session_factory)
    jobs = SqlJobStore(runtime.session_factory)
    usage_lag = BrokerUsageLag(runtime.settings.kafka)
    runner, close = billing_close(
        store, jobs, directory, JobSettings.from_env(os.environ), usage_lag
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

    kafka = runtime.settings.kafka
    workers = [
        ConsumerWorker("usage-ingest", lambda: usage_consumer(runtime.session_factory, kafka)),
        ConsumerWorker("contracts", lambda: contracts_consumer(runtime.session_factory, kafka)),
        runner,
    ]
    app = build_app(runtime, register_servicers, workers=workers)
    app.on_stop += [gauge.cancel for gauge in register_gauges(runtime.session_factory, utcnow)]
    app.on_stop.append(usage_lag.close)
    return app


def billing_close(
    store: SqlBillingStore, jobs: SqlJobStore, directory: BillingDirectory,
    settings: JobSettings, usage_lag: UsageLag, clock: Callable[[], datetime] = utcnow,
) -> tuple[JobRunner, BillingClose]:
    """The job worker and the close application whose work it runs."""
    runner = JobRunner(jobs, clock, settings)
    close = BillingClose(
        BillingCycle(store, directory, clock), store, jobs, runner, directory, usage_lag,
        # Reconciliation of both ends (issue 16 part 2) plugs in here.
        NoReconciliation(), clock,
    )
    runner.register(close.handlers())
    return runner, close


def main() -> int:
    try:
        load_directory()
    except ConfigError as error:
        print(f"{BILLING.name}: configuration error: {error}")
        return 2
    return run_service(BILLING, make_app)
