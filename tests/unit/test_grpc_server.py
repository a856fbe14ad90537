"""The shared gRPC layer: error mapping with details, auth, default deadline, health."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2
from grpc_status import rpc_status

from services.common import db, errors
from services.common.auth import Principal, Role, SqlTokenStore, current_principal
from services.common.config import ServiceSettings
from services.common.grpc_server import (
    GrpcApp,
    HealthMonitor,
    call_metadata,
    client_channel,
)

SERVICE = "test.Echo"


def _identity(data: bytes) -> bytes:
    return data


def _handlers(calls: list[str]) -> grpc.GenericRpcHandler:
    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        return current_principal().subject.encode()

    def capacity(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise errors.CapacityExhausted("only 400 Mbps left on port SG-1/1")

    def invalid(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise errors.InvalidArgument.for_field("bandwidth_mbps", "must be an offered step")

    def crash(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("secret internals")

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.append("slow")
        time.sleep(1.0)
        return b""

    def count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(3):
            yield str(i).encode()
        raise errors.NotFound("no more")

    unary = {
        "WhoAmI": whoami,
        "Capacity": capacity,
        "Invalid": invalid,
        "Crash": crash,
        "Slow": slow,
    }
    handlers: dict[str, grpc.RpcMethodHandler] = {
        name: grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_identity, response_serializer=_identity
        )
        for name, fn in unary.items()
    }
    handlers["Count"] = grpc.unary_stream_rpc_method_handler(
        count, request_deserializer=_identity, response_serializer=_identity
    )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[GrpcApp, str]]:
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    db.migrate(url, Path("services/order/migrations"))
    factory = db.make_session_factory(db.make_engine(url))
    tokens = SqlTokenStore(factory, "pepper")
    token = tokens.issue(Principal("alice@acme", Role.CUSTOMER, tenant="acme"))
    settings = ServiceSettings.from_env("test", 0, {"IDC_TEST_LISTEN": "127.0.0.1:0"})
    calls: list[str] = []

    def register(server: grpc.Server) -> list[str]:
        server.add_generic_rpc_handlers((_handlers(calls),))
        return [SERVICE]

    grpc_app = GrpcApp(settings=settings, register=register, tokens=tokens)
    grpc_app.start()
    yield grpc_app, token
    grpc_app.stop()


def _call(channel: grpc.Channel, method: str, token: str | None, timeout: float | None = None
          ) -> bytes:
    stub = channel.unary_unary(f"/{SERVICE}/{method}")
    result: bytes = stub(b"", metadata=call_metadata(token), timeout=timeout)
    return result


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[-1].Unpack(info)
    return info.reason


def test_bearer_token_becomes_the_principal(app: tuple[GrpcApp, str]) -> None:
    grpc_app, token = app
    with client_channel(f"127.0.0.1:{grpc_app.port}") as channel:
        assert _call(channel, "WhoAmI", token) == b"alice@acme"
        for bad in (None, "idc_not-a-token"):
            with pytest.raises(grpc.RpcError) as refused:
                _call(channel, "WhoAmI", bad)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_domain_errors_map_to_status_codes_with_details(app: tuple[GrpcApp, str]) -> None:
    grpc_app, token = app
    with client_channel(f"127.0.0.1:{grpc_app.port}") as channel:
        with pytest.raises(grpc.RpcError) as exhausted:
            _call(channel, "Capacity", token)
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "400 Mbps left" in (exhausted.value.details() or "")

        with pytest.raises(grpc.RpcError) as invalid:
            _call(channel, "Invalid", token)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(invalid.value)  # type: ignore[arg-type]
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field == "bandwidth_mbps"

        with pytest.raises(grpc.RpcError) as crashed:
            _call(channel, "Crash", token)
        assert crashed.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in (crashed.value.details() or "")
        assert _reason(crashed.value) == "INTERNAL_ERROR"
        assert _reason(exhausted.value) == "CAPACITY_EXHAUSTED"


def test_streaming_errors_are_mapped_after_the_items(app: tuple[GrpcApp, str]) -> None:
    grpc_app, token = app
    with client_channel(f"127.0.0.1:{grpc_app.port}") as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Count")(b"", metadata=call_metadata(token))
        received = []
        with pytest.raises(grpc.RpcError) as ended:
            received.extend(stream)
        assert received == [b"0", b"1", b"2"]
        assert ended.value.code() == grpc.StatusCode.NOT_FOUND


def test_oversized_requests_are_refused_before_the_handler(app: tuple[GrpcApp, str]) -> None:
    grpc_app, token = app
    with client_channel(f"127.0.0.1:{grpc_app.port}") as channel:
        stub = channel.unary_unary(f"/{SERVICE}/WhoAmI")
        with pytest.raises(grpc.RpcError) as refused:
            stub(b"x" * (5 * 1024 * 1024), metadata=call_metadata(token), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_client_channel_applies_a_default_deadline(app: tuple[GrpcApp, str]) -> None:
    grpc_app, token = app
    with client_channel(f"127.0.0.1:{grpc_app.port}", default_timeout_s=0.2) as channel:
        with pytest.raises(grpc.RpcError) as late:
            _call(channel, "Slow", token)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # an explicit deadline wins over the default
        assert _call(channel, "Slow", token, timeout=5.0) == b""


def test_health_follows_start_checks_and_shutdown() -> None:
    servicer = health.HealthServicer()
    healthy = threading.Event()
    monitor = HealthMonitor(servicer, [SERVICE], {"database": healthy.is_set})

    def status() -> int:
        request = health_pb2.HealthCheckRequest(service=SERVICE)
        reply: health_pb2.HealthCheckResponse = servicer.Check(request, None)
        return reply.status

    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert status() == not_serving  # starting
    healthy.set()
    monitor.mark_started()
    assert status() == serving
    healthy.clear()
    monitor.evaluate()
    assert status() == not_serving  # database lost
    healthy.set()
    monitor.evaluate()
    assert status() == serving
    monitor.begin_shutdown()
    monitor.evaluate()
    assert status() == not_serving


def test_a_generated_base_servicer_answers_unimplemented_honestly(tmp_path: Path) -> None:
    from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
    from services.common.servicers import register, unimplemented

    settings = ServiceSettings.from_env("test", 0, {"IDC_TEST_LISTEN": "127.0.0.1:0"})

    def register_base(server: grpc.Server) -> list[str]:
        return [
            register(
                server,
                billing_service_pb2.DESCRIPTOR,
                "BillingService",
                billing_service_pb2_grpc.add_BillingServiceServicer_to_server,
                unimplemented(billing_service_pb2_grpc.BillingServiceServicer),
            )
        ]

    grpc_app = GrpcApp(settings=settings, register=register_base, tokens=None)
    grpc_app.start()
    try:
        with client_channel(f"127.0.0.1:{grpc_app.port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary("/idc.billing.v1.BillingService/GetInvoice")(b"")
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "GetInvoice" in (refused.value.details() or "")
            assert _reason(refused.value) == "NOT_IMPLEMENTED"
    finally:
        grpc_app.stop()


def test_an_alarm_is_its_own_health_entry_and_leaves_serving_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer = health.HealthServicer()
    stuck: list[str] = []
    monitor = HealthMonitor(servicer, [SERVICE], {}, {"saga-stuck": lambda: list(stuck)})

    def status(name: str) -> int:
        reply: health_pb2.HealthCheckResponse = servicer.Check(
            health_pb2.HealthCheckRequest(service=name), None
        )
        return reply.status

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    monitor.mark_started()
    assert status("idc.alarm.saga-stuck") == serving
    assert monitor.active_alarms() == {}
    stuck.append("saga s1 waits on cq-edge-1 for 130 s")
    with caplog.at_level(logging.WARNING):
        monitor.evaluate()
    assert status("idc.alarm.saga-stuck") == not_serving
    assert status(SERVICE) == serving
    assert monitor.active_alarms() == {"saga-stuck": ["saga s1 waits on cq-edge-1 for 130 s"]}
    assert "saga s1 waits on cq-edge-1" in caplog.text
    stuck.clear()
    monitor.evaluate()
    assert status("idc.alarm.saga-stuck") == serving
    assert monitor.active_alarms() == {}


def test_an_alarm_check_that_raises_is_an_alarm() -> None:
    def broken() -> list[str]:
        raise RuntimeError("database gone")

    monitor = HealthMonitor(health.HealthServicer(), [SERVICE], {}, {"orders-waiting": broken})
    monitor.mark_started()
    assert "database gone" in monitor.active_alarms()["orders-waiting"][0]
