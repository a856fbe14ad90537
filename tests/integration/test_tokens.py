"""One token issuer against the real services and the real broker: a token issued through
the order service's TokenService works on order, billing and provisioning; revoked or
rotated it is refused by every one of them within the stated bound (relay interval plus the
revocation reader's poll, about 1-2 s; waited for here with a generous bound); an expired
token is refused as expired; a service without keys, or with development keys outside dev
mode, does not start; a reader cut off from the broker raises its alarm."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from devstack.kafka import start_broker
from devstack.process import free_port, log_tail
from devstack.services import (
    ServiceProcess,
    health_status,
    start_service,
    terminate_all,
    wait_serving,
)
from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from idc.ops.v1 import token_service_pb2 as pb
from idc.ops.v1 import token_service_pb2_grpc
from idc.order.v1 import order_service_pb2, order_service_pb2_grpc
from idc.provisioning.v1 import provisioning_service_pb2, provisioning_service_pb2_grpc
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata
from services.common.tokens import HarnessKeys, SigningKey

pytestmark = pytest.mark.integration

KEYS = HarnessKeys.generate()
# The stated bound is about 2 s; the wait allows for a loaded machine.
REVOCATION_WAIT_S = 15.0
NAMES = ("order", "billing", "provisioning")


def _env(tmp_path: Path, bootstrap: str, name: str, **extra: str) -> dict[str, str]:
    return {
        "IDC_KAFKA_BOOTSTRAP": bootstrap,
        f"IDC_{name.upper()}_DATABASE_URL": f"sqlite:///{tmp_path / (name + '.db')}",
        "IDC_VAR_DIR": str(tmp_path),
        "IDC_RELAY_POLL_INTERVAL_S": "0.05",
        "IDC_KAFKA_FETCH_MAX_WAIT_MS": "50",
        "IDC_GRACE_PERIOD_S": "2",
        "IDC_LOG_FORMAT": "text",
        **KEYS.env(),
        **extra,
    }


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
             ) -> Iterator[dict[str, ServiceProcess]]:
    tmp_path = tmp_path_factory.mktemp("tokens")
    started = {
        name: start_service(name, f"127.0.0.1:{free_port()}",
                            _env(tmp_path, kafka_bootstrap, name), tmp_path / f"{name}.log")
        for name in NAMES
    }
    try:
        for service in started.values():
            wait_serving(service)
        yield started
    finally:
        terminate_all(started.values())


def _calls(services: dict[str, ServiceProcess]) -> dict[str, Callable[[str], None]]:
    """One call per service that an admin token may make and that touches no router."""
    def order(token: str) -> None:
        with grpc.insecure_channel(services["order"].address) as channel:
            order_service_pb2_grpc.OrderServiceStub(channel).ListOrders(
                order_service_pb2.ListOrdersRequest(), metadata=call_metadata(token), timeout=10)

    def billing(token: str) -> None:
        with grpc.insecure_channel(services["billing"].address) as channel:
            billing_service_pb2_grpc.BillingServiceStub(channel).ListInvoices(
                billing_service_pb2.ListInvoicesRequest(), metadata=call_metadata(token),
                timeout=10)

    def provisioning(token: str) -> None:
        with grpc.insecure_channel(services["provisioning"].address) as channel:
            provisioning_service_pb2_grpc.ProvisioningServiceStub(channel).ListSyncStatus(
                provisioning_service_pb2.ListSyncStatusRequest(), metadata=call_metadata(token),
                timeout=10)

    return {"order": order, "billing": billing, "provisioning": provisioning}


def _refusal(call: Callable[[str], None], token: str) -> grpc.RpcError | None:
    try:
        call(token)
    except grpc.RpcError as error:
        return error
    return None


def _wait_refused_everywhere(services: dict[str, ServiceProcess], token: str, reason: str
                             ) -> float:
    """Seconds until every service refuses ``token`` as UNAUTHENTICATED naming ``reason``."""
    started = time.monotonic()
    pending = dict(_calls(services))
    while pending and time.monotonic() - started < REVOCATION_WAIT_S:
        for name, call in list(pending.items()):
            error = _refusal(call, token)
            if error is not None:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, error)
                assert reason in (error.details() or ""), (name, error.details())
                del pending[name]
        time.sleep(0.05)
    assert not pending, f"still accepted after {REVOCATION_WAIT_S} s by {sorted(pending)}"
    return time.monotonic() - started


def _issuer(services: dict[str, ServiceProcess]
            ) -> Iterator[token_service_pb2_grpc.TokenServiceStub]:
    with grpc.insecure_channel(services["order"].address) as channel:
        yield token_service_pb2_grpc.TokenServiceStub(channel)


def admin() -> list[tuple[str, str]]:
    """An admin's metadata, minted when a test runs (a token minted at import would have
    expired by the time a long suite reaches these tests)."""
    return call_metadata(KEYS.mint(Principal("root@ops", Role.ADMIN), 600))


def test_an_issued_token_works_everywhere_and_a_revoked_one_nowhere(
    services: dict[str, ServiceProcess],
) -> None:
    for issuer in _issuer(services):
        issued = issuer.IssueToken(pb.IssueTokenRequest(subject="auditor@ops", role="admin"),
                                   metadata=admin(), timeout=10)
        for name, call in _calls(services).items():
            assert _refusal(call, issued.token) is None, name
        listed = issuer.ListTokens(pb.ListTokensRequest(), metadata=admin(), timeout=10)
        assert issued.info.token_id in {t.token_id for t in listed.tokens}
        assert all(issued.token not in str(t) for t in listed.tokens)  # never the token
        issuer.RevokeToken(pb.RevokeTokenRequest(token_id=issued.info.token_id),
                           metadata=admin(), timeout=10)
        took = _wait_refused_everywhere(services, issued.token, "revoked")
        print(f"revocation refused everywhere after {took:.2f} s")


def test_a_rotated_token_keeps_its_principal_and_the_old_one_stops(
    services: dict[str, ServiceProcess],
) -> None:
    for issuer in _issuer(services):
        old = issuer.IssueToken(pb.IssueTokenRequest(subject="rota@ops", role="admin"),
                                metadata=admin(), timeout=10)
        rotated = issuer.RotateToken(pb.RotateTokenRequest(token_id=old.info.token_id),
                                     metadata=admin(), timeout=10)
        assert rotated.info.principal_id == old.info.principal_id
        assert rotated.info.token_id != old.info.token_id
        _wait_refused_everywhere(services, old.token, "revoked")
        for name, call in _calls(services).items():
            assert _refusal(call, rotated.token) is None, name


def test_lifetimes_are_bounded_and_an_expired_token_is_refused_as_expired(
    services: dict[str, ServiceProcess],
) -> None:
    for issuer in _issuer(services):
        with pytest.raises(grpc.RpcError) as too_long:
            issuer.IssueToken(pb.IssueTokenRequest(subject="x@ops", role="admin",
                                                   ttl=Duration(seconds=91 * 86_400)),
                              metadata=admin(), timeout=10)
        assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ttl" in (too_long.value.details() or "")
        short = issuer.IssueToken(pb.IssueTokenRequest(subject="brief@ops", role="admin",
                                                       ttl=Duration(seconds=2)),
                                  metadata=admin(), timeout=10)
        _wait_refused_everywhere(services, short.token, "expired")
        # Only admins reach the issuer.
        ops = call_metadata(KEYS.mint(Principal("sam@sg", Role.OPS, telco="sg")))
        with pytest.raises(grpc.RpcError) as denied:
            issuer.ListTokens(pb.ListTokensRequest(), metadata=ops, timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Health says the revocation list is current.
    for service in services.values():
        assert health_status(service.address, "idc.alarm.token-revocations-stale") \
            == health_pb2.HealthCheckResponse.SERVING


def _exits_naming(name: str, env: dict[str, str], tmp_path: Path, text: str) -> None:
    log = tmp_path / f"{name}-refused.log"
    process = start_service(name, f"127.0.0.1:{free_port()}", env, log)
    try:
        assert process.proc.wait(60) == 2, log_tail(log)
    finally:
        process.terminate()
    assert text in log.read_text(), log_tail(log)


def test_a_service_without_keys_or_with_development_keys_outside_dev_mode_does_not_start(
    tmp_path: Path, kafka_bootstrap: str,
) -> None:
    no_keys = {"IDC_TOKEN_KEYS": "", "IDC_TOKEN_SIGNING_KEY": "", "IDC_DEV_MODE": ""}
    _exits_naming("billing", _env(tmp_path, kafka_bootstrap, "billing", **no_keys), tmp_path,
                  "IDC_TOKEN_KEYS is not set")
    _exits_naming("provisioning", _env(tmp_path, kafka_bootstrap, "provisioning",
                                       IDC_DEV_MODE="false"), tmp_path,
                  "IDC_TOKEN_KEYS holds development keys")
    production = SigningKey.generate("prod-1")
    contact_keys = json.dumps({"active": "c1", "keys": {
        "c1": base64.b64encode(os.urandom(32)).decode()}})
    _exits_naming("order", _env(tmp_path, kafka_bootstrap, "order", IDC_DEV_MODE="",
                                IDC_TOKEN_KEYS=production.key_set().to_json(),
                                IDC_TOKEN_SIGNING_KEY="", IDC_ORDER_CONTACT_KEYS=contact_keys),
                  tmp_path,
                  "IDC_TOKEN_SIGNING_KEY is not set")


def _revocation_lag_s(metrics_url: str) -> float:
    """The process's idc_token_revocations_lag_seconds, scraped."""
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    [lag] = [sample.value for family in text_string_to_metric_families(text)
             for sample in family.samples if sample.name == "idc_token_revocations_lag_seconds"]
    return float(lag)


def test_a_reader_cut_off_from_the_broker_raises_its_alarm(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    with start_broker(tmp_path / "kafka") as broker:
        service = start_service(
            "billing", f"127.0.0.1:{free_port()}",
            _env(tmp_path, broker.bootstrap, "billing", IDC_TOKEN_REVOCATION_STALE_S="3",
                 IDC_METRICS_LISTEN=metrics),
            tmp_path / "billing.log")
        try:
            wait_serving(service)
            alarm = "idc.alarm.token-revocations-stale"
            serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                                    health_pb2.HealthCheckResponse.NOT_SERVING)
            _wait_health(service, alarm, serving)
            # Caught up (checked about once a second): under the bound.
            assert _revocation_lag_s(f"http://{metrics}/metrics") < 3
            broker.stop()
            _wait_health(service, alarm, not_serving)
            # The gauge shows what the alarm saw: past the bound.
            assert _revocation_lag_s(f"http://{metrics}/metrics") > 3
            # Fail open: a valid token is still accepted while the list is stale.
            token = KEYS.mint(Principal("bea@billing", Role.BILLING_ADMIN))
            with grpc.insecure_channel(service.address) as channel:
                billing_service_pb2_grpc.BillingServiceStub(channel).ListInvoices(
                    billing_service_pb2.ListInvoicesRequest(), metadata=call_metadata(token),
                    timeout=10)
        finally:
            service.terminate()


def _wait_health(service: ServiceProcess, name: str, wanted: int, timeout_s: float = 30.0
                 ) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = health_status(service.address, name)
        if last == wanted:
            return
        time.sleep(0.2)
    pytest.fail(f"{name} stayed {last}, expected {wanted}:\n{log_tail(service.log_path)}")
