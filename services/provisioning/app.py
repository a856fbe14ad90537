"""Wiring of the provisioning service process: servicers, workers, migrations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from idc.provisioning.v1 import provisioning_service_pb2, provisioning_service_pb2_grpc
from services.common.grpc_server import GrpcApp
from services.common.runtime import ServiceRuntime, build_app, run_service
from services.common.servicers import register, unimplemented

NAME = "provisioning"
DEFAULT_PORT = 50052
MIGRATIONS = Path(__file__).parent / "migrations"


def register_servicers(server: grpc.Server) -> Sequence[str]:
    # The business RPCs arrive with the provisioning issue; until then the generated base answers
    # UNIMPLEMENTED rather than a made-up result.
    return [
        register(
            server,
            provisioning_service_pb2.DESCRIPTOR,
            "ProvisioningService",
            provisioning_service_pb2_grpc.add_ProvisioningServiceServicer_to_server,
            unimplemented(provisioning_service_pb2_grpc.ProvisioningServiceServicer),
        )
    ]


def make_app(runtime: ServiceRuntime) -> GrpcApp:
    return build_app(runtime, register_servicers)


def main() -> int:
    return run_service(NAME, DEFAULT_PORT, MIGRATIONS, make_app)
