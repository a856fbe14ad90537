"""A service process started with TLS exports when its certificates expire, and follows a
renewal of the served certificate without a restart."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from devstack.certs import LocalCa
from devstack.process import free_port
from devstack.services import ServiceProcess, start_service, wait_serving
from services.common.metric_catalogue import TLS_CERTIFICATE_NOT_AFTER
from services.common.tokens import HarnessKeys

pytestmark = pytest.mark.integration

NAME = TLS_CERTIFICATE_NOT_AFTER.prometheus_name


def _not_after(path: Path) -> float:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()


def _gauge(service: ServiceProcess) -> dict[str, float]:
    """certificate label -> value, as the service's /metrics shows it now."""
    with urllib.request.urlopen(service.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return {
        sample.labels["certificate"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == NAME
    }


def _scraped(service: ServiceProcess) -> dict[str, float] | None:
    """The gauge, or None while the process does not serve its metrics yet."""
    assert service.proc.poll() is None, f"{service.name} exited: {service.log_path}"
    try:
        return _gauge(service)
    except OSError:
        return None


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.2)


def test_a_tls_service_exports_its_certificates_not_after_and_follows_a_renewal(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    ca = LocalCa.create("expiry-ca")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    cert, key = ca.issue("idc-order", sans=("127.0.0.1",), days=20).write(tmp_path, "server")
    env = {
        "IDC_TLS": "on", "IDC_TLS_CERT_FILE": str(cert), "IDC_TLS_KEY_FILE": str(key),
        "IDC_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        "IDC_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "IDC_ORDER_DATABASE_URL": f"sqlite:///{tmp_path / 'order.db'}",
        "IDC_VAR_DIR": str(tmp_path), "IDC_GRACE_PERIOD_S": "3",
        **HarnessKeys.generate().env(),
    }
    service = start_service(
        "order", f"127.0.0.1:{free_port()}", env, tmp_path / "order.log",
        metrics_listen=f"127.0.0.1:{free_port()}",
    )
    try:
        wait_serving(service)  # over TLS: the client trusts ca.pem
        assert _gauge(service) == {
            "grpc-server": _not_after(cert), "grpc-ca": _not_after(tmp_path / "ca.pem"),
        }
        first = _not_after(cert)
        assert 19 * 86400 < first - time.time() < 20 * 86400

        stamp = cert.stat().st_mtime_ns
        ca.issue("idc-order", sans=("127.0.0.1",), days=90).write(tmp_path, "server")
        os.utime(cert, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even on coarse clocks
        renewed = _not_after(cert)
        assert renewed > first + 60 * 86400
        _wait_for("the renewed not-after", lambda: _gauge(service)["grpc-server"] == renewed)
    finally:
        service.terminate()


def test_the_console_exports_the_ca_it_dials_the_services_with(tmp_path: Path) -> None:
    ca = LocalCa.create("expiry-ca")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    console = start_service(
        "console", f"127.0.0.1:{free_port()}",
        {"IDC_TLS": "on", "IDC_TLS_CA_FILE": str(tmp_path / "ca.pem"),
         "IDC_VAR_DIR": str(tmp_path), **HarnessKeys.generate().env()},
        tmp_path / "console.log", metrics_listen=f"127.0.0.1:{free_port()}",
    )
    expected = {"grpc-ca": _not_after(tmp_path / "ca.pem")}
    try:
        _wait_for("the console's gauge", lambda: _scraped(console) == expected)
    finally:
        console.terminate()
