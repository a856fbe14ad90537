"""Start the project's own services as child processes, the way ``make run`` and tests do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.process import DevstackError, log_tail, spawn, stop
from services.common.tls import ClientTls

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServiceProcess:
    name: str
    address: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    # Where its Prometheus metrics are served (http://.../metrics), when asked for.
    metrics_address: str | None = None
    # How to dial it: the TLS its environment gives clients (IDC_TLS*).
    tls: ClientTls = field(default_factory=ClientTls.plaintext)

    @property
    def metrics_url(self) -> str:
        if self.metrics_address is None:
            raise DevstackError(f"{self.name} was started without a metrics address")
        return f"http://{self.metrics_address}/metrics"

    def request_stop(self) -> None:
        """SIGTERM (graceful shutdown) without waiting; :meth:`terminate` waits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop(self.proc, timeout=1.0)
        return self.proc.wait()


def terminate_all(services: Iterable[ServiceProcess]) -> None:
    """Stop several services at once: each is asked first, then each is waited for (and
    killed if it does not exit in time), so their graceful shutdowns overlap."""
    services = list(services)
    for service in services:
        service.request_stop()
    for service in services:
        service.terminate()


def health_status(
    address: str, service: str = "", timeout: float = 2.0, tls: ClientTls | None = None
) -> int:
    """The health service's answer for ``service`` ('' is the whole server); ``tls``
    defaults to this process's ``IDC_TLS*`` environment."""
    with (ClientTls.from_env() if tls is None else tls).channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        status: int = reply.status
        return status


def wait_serving(service: ServiceProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise DevstackError(
                f"{service.name} exited with status {service.proc.returncode}:\n"
                + log_tail(service.log_path)
            )
        try:
            serving = health_pb2.HealthCheckResponse.SERVING
            if health_status(service.address, tls=service.tls) == serving:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise DevstackError(
        f"{service.name} at {service.address} is not SERVING after {timeout:.0f} s:\n"
        + log_tail(service.log_path)
    )


def start_service(
    name: str, listen: str, env: dict[str, str], log_path: Path,
    metrics_listen: str | None = None,
) -> ServiceProcess:
    """``python -m services.<name>`` listening on ``listen``, with ``env`` on top of ours.

    ``name`` may be dotted (``billing.meter``); its last part names the settings prefix
    (``IDC_METER_LISTEN``).
    """
    prefix = name.rsplit(".", 1)[-1].upper()
    # The devstack is a development tool: its services run in the explicit development
    # mode (generated development keys under IDC_VAR_DIR) unless ``env`` says otherwise.
    child_env = {"IDC_DEV_MODE": "true", **os.environ, **env, f"IDC_{prefix}_LISTEN": listen}
    if metrics_listen is not None:
        child_env["IDC_METRICS_LISTEN"] = metrics_listen
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        [sys.executable, "-m", f"services.{name}"],
        env=child_env,
        cwd=REPO_ROOT,
        log_path=log_path,
    )
    return ServiceProcess(
        name, listen, proc, log_path, metrics_listen, ClientTls.from_env(child_env)
    )
