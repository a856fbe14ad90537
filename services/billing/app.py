"""Wiring of the billing service process: servicers, consumers, migrations.

``IDC_BILLING_ENTITIES_FILE`` points at the billing entities file (default: the one shipped
in services/billing/data/); a malformed file, or an entity whose telco has no end the meter
reads, stops the process at start with the reason.
``IDC_BILLING_RECONCILE_TOLERANCE_PERCENT`` is the reconciliation tolerance (reconcile.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from services.billing.cycle import BillingCycle, utcnow
from services.billing.directory import ENTITIES_ENV, load_directory
from services.billing.domain.ends import billed_side
from services.billing.domain.entities import BillingDirectory
from services.billing.ingest import contracts_consumer, usage_consumer
from services.billing.metrics import register_gauges
from services.billing.reconcile import tolerance_from_env
from services.billing.servicer import BillingServicer
from services.billing.store import SqlBillingStore
from services.common.config import ConfigError
from services.common.errors import InvalidArgument
from services.common.grpc_server import GrpcApp
from services.common.runtime import ConsumerWorker, ServiceRuntime, build_app, run_service
from services.common.service_table import BILLING
from services.common.servicers import register

MIGRATIONS = BILLING.migrations_dir


def checked_directory() -> BillingDirectory:
    """The billing entities, each with an end to bill (ConfigError otherwise)."""
    directory = load_directory()
    for entity in directory.entities.values():
        try:
            billed_side(entity)
        except InvalidArgument as error:
            raise ConfigError(f"{ENTITIES_ENV}: {error.message}") from None
    return directory


def make_app(runtime: ServiceRuntime) -> GrpcApp:
    directory = checked_directory()
    store = SqlBillingStore(runtime.session_factory)
    cycle = BillingCycle(store, directory, utcnow, tolerance_from_env())
    servicer = BillingServicer(store, cycle, directory, utcnow)

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
    ]
    app = build_app(runtime, register_servicers, workers=workers)
    app.on_stop += [gauge.cancel for gauge in register_gauges(runtime.session_factory, utcnow)]
    return app


def main() -> int:
    try:
        checked_directory()
        tolerance_from_env()
    except ConfigError as error:
        print(f"{BILLING.name}: configuration error: {error}")
        return 2
    return run_service(BILLING, make_app)
