"""Wiring of the order service process: servicers, workers, migrations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from idc.ops.v1 import approval_service_pb2, approval_service_pb2_grpc
from idc.order.v1 import order_service_pb2, order_service_pb2_grpc
from services.common.grpc_server import GrpcApp
from services.common.runtime import ServiceRuntime, build_app, run_service
from services.common.servicers import register, unimplemented

NAME = "order"
DEFAULT_PORT = 50051
MIGRATIONS = Path(__file__).parent / "migrations"


def register_servicers(server: grpc.Server) -> Sequence[str]:
    # The business RPCs arrive with the order issue; until then the generated bases answer
    # UNIMPLEMENTED rather than a made-up result.
    return [
        register(
            server,
            order_service_pb2.DESCRIPTOR,
            "OrderService",
            order_service_pb2_grpc.add_OrderServiceServicer_to_server,
            unimplemented(order_service_pb2_grpc.OrderServiceServicer),
        ),
        register(
            server,
            approval_service_pb2.DESCRIPTOR,
            "ApprovalService",
            approval_service_pb2_grpc.add_ApprovalServiceServicer_to_server,
            unimplemented(approval_service_pb2_grpc.ApprovalServiceServicer),
        ),
    ]


def make_app(runtime: ServiceRuntime) -> GrpcApp:
    return build_app(runtime, register_servicers)


def main() -> int:
    return run_service(NAME, DEFAULT_PORT, MIGRATIONS, make_app)
