"""Wiring of the billing service process: servicers, workers, migrations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from services.common.grpc_server import GrpcApp
from services.common.runtime import ServiceRuntime, build_app, run_service
from services.common.servicers import register, unimplemented

NAME = "billing"
DEFAULT_PORT = 50053
MIGRATIONS = Path(__file__).parent / "migrations"


def register_servicers(server: grpc.Server) -> Sequence[str]:
    # The business RPCs arrive with the billing issue; until then the generated base answers
    # UNIMPLEMENTED rather than a made-up result.
    return [
        register(
            server,
            billing_service_pb2.DESCRIPTOR,
            "BillingService",
            billing_service_pb2_grpc.add_BillingServiceServicer_to_server,
            unimplemented(billing_service_pb2_grpc.BillingServiceServicer),
        )
    ]


def make_app(runtime: ServiceRuntime) -> GrpcApp:
    return build_app(runtime, register_servicers)


def main() -> int:
    return run_service(NAME, DEFAULT_PORT, MIGRATIONS, make_app)
