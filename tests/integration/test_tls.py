"""gRPC over TLS and partner mTLS on a real GrpcApp, real port, certificates made here.

A small business method (``WhoAmI``) goes through the service interceptor like every API
call: token -> principal, then the client certificate's tenant binding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.certs import LocalCa
from devstack.process import free_port
from services.common.auth import Principal, Role, current_principal
from services.common.config import ServiceSettings
from services.common.grpc_server import GrpcApp, call_metadata, client_channel
from services.common.tls import ClientCertMode, ClientTls, ServerTls
from services.common.tokens import HarnessKeys

SERVICE = "test.Tls"
REPO = Path(__file__).resolve().parents[2]
Serve = Callable[[ServerTls], GrpcApp]


def _identity(data: bytes) -> bytes:
    return data


def _register(server: grpc.Server) -> list[str]:
    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        principal = current_principal()
        return f"{principal.subject}/{principal.tenant}".encode()

    handler = grpc.unary_unary_rpc_method_handler(
        whoami, request_deserializer=_identity, response_serializer=_identity
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"WhoAmI": handler}),)
    )
    return [SERVICE]


@dataclass
class Pki:
    """One trusted CA with a server and client certificates, and a CA nobody trusts."""

    dir: Path
    ca: Path
    cert: Path
    key: Path
    acme: tuple[Path, Path]  # mapped to tenant acme
    stranger: tuple[Path, Path]  # trusted CA, mapped to no tenant
    rogue: tuple[Path, Path]  # another CA's client certificate, CN of a mapped partner
    rogue_ca: Path
    tenants: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    where = tmp_path_factory.mktemp("pki")
    ca, rogue_ca = LocalCa.create("test-ca"), LocalCa.create("rogue-ca")
    (where / "ca.pem").write_bytes(ca.cert_pem)
    (where / "rogue-ca.pem").write_bytes(rogue_ca.cert_pem)
    cert, key = ca.issue("idc-order", sans=("127.0.0.1", "localhost")).write(where, "server")
    tenants = where / "tenants.toml"
    tenants.write_text('[tenants]\n"integrator.acme.example" = "acme"\n')
    return Pki(
        dir=where, ca=where / "ca.pem", cert=cert, key=key,
        acme=ca.issue("integrator.acme.example", client=True).write(where, "acme"),
        stranger=ca.issue("nobody.example", client=True).write(where, "stranger"),
        rogue=rogue_ca.issue("integrator.acme.example", client=True).write(where, "rogue"),
        rogue_ca=where / "rogue-ca.pem", tenants=tenants,
    )


@pytest.fixture(scope="module")
def tokens() -> HarnessKeys:
    return HarnessKeys.generate("tls-test")


def server_tls(pki: Pki, **env: str) -> ServerTls:
    return ServerTls.from_env("test", {
        "IDC_TLS_CERT_FILE": str(pki.cert), "IDC_TLS_KEY_FILE": str(pki.key),
        "IDC_TLS_CA_FILE": str(pki.ca), "IDC_TLS_CLIENT_TENANTS_FILE": str(pki.tenants),
        **env,
    })


@pytest.fixture
def serve(tokens: HarnessKeys) -> Iterator[Serve]:
    apps: list[GrpcApp] = []

    def start(tls: ServerTls) -> GrpcApp:
        settings = ServiceSettings.from_env("test", 0, {"IDC_TEST_LISTEN": "127.0.0.1:0"})
        app = GrpcApp(settings=settings, register=_register, tokens=tokens.verifier(), tls=tls)
        app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


def client(pki: Pki, cert: tuple[Path, Path] | None = None, ca: Path | None = None) -> ClientTls:
    env = {"IDC_TLS": "on", "IDC_TLS_CA_FILE": str(ca or pki.ca)}
    if cert is not None:
        env |= {"IDC_TLS_CLIENT_CERT_FILE": str(cert[0]), "IDC_TLS_CLIENT_KEY_FILE": str(cert[1])}
    return ClientTls.from_env(env)


def whoami(port: int, tls: ClientTls, token: str | None) -> str:
    with client_channel(f"127.0.0.1:{port}", 5.0, tls) as channel:
        answer: bytes = channel.unary_unary(f"/{SERVICE}/WhoAmI")(
            b"", metadata=call_metadata(token)
        )
        return answer.decode()


def refused(port: int, tls: ClientTls, token: str | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        whoami(port, tls, token)
    return error.value


def issue(tokens: HarnessKeys, principal: Principal) -> str:
    return tokens.mint(principal)


ANN = Principal("ann@acme", Role.CUSTOMER, tenant="acme")
BOB = Principal("bob@globex", Role.CUSTOMER, tenant="globex")
OPS = Principal("ops@sg", Role.OPS, telco="sg")


def test_a_tls_server_answers_a_client_trusting_its_ca(
    pki: Pki, serve: Serve, tokens: HarnessKeys
) -> None:
    app = serve(server_tls(pki))
    assert whoami(app.port, client(pki), issue(tokens, BOB)) == "bob@globex/globex"


def test_a_tls_server_refuses_a_plaintext_client(
    pki: Pki, serve: Serve, tokens: HarnessKeys
) -> None:
    app = serve(server_tls(pki))
    error = refused(app.port, ClientTls.plaintext(), issue(tokens, ANN))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_trusting_another_ca_fails_the_handshake(
    pki: Pki, serve: Serve, tokens: HarnessKeys
) -> None:
    app = serve(server_tls(pki))
    error = refused(app.port, client(pki, ca=pki.rogue_ca), issue(tokens, ANN))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_binds_the_certificates_tenant(
    pki: Pki, serve: Serve, tokens: HarnessKeys
) -> None:
    app = serve(server_tls(pki, IDC_TLS_CLIENT_CERT="required"))
    acme = client(pki, pki.acme)
    assert whoami(app.port, acme, issue(tokens, ANN)) == "ann@acme/acme"
    for other in (BOB, OPS):
        error = refused(app.port, acme, issue(tokens, other))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "tenant acme" in (error.details() or "")
    # A certificate binds, it does not authenticate: the token is still needed.
    assert refused(app.port, acme, None).code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_certificate_of_no_tenant_is_refused(
    pki: Pki, serve: Serve, tokens: HarnessKeys
) -> None:
    app = serve(server_tls(pki, IDC_TLS_CLIENT_CERT="required"))
    error = refused(app.port, client(pki, pki.stranger), issue(tokens, ANN))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "CN=nobody.example is not mapped to any tenant" in (error.details() or "")


def test_a_server_requiring_client_certificates_refuses_a_client_without(
    pki: Pki, serve: Serve, tokens: HarnessKeys
) -> None:
    app = serve(server_tls(pki, IDC_TLS_CLIENT_CERT="required"))
    assert app.tls.client_cert is ClientCertMode.REQUIRED
    token = issue(tokens, ANN)
    assert refused(app.port, client(pki), token).code() == grpc.StatusCode.UNAVAILABLE
    # Same CN as a mapped partner, signed by a CA the server does not trust.
    assert refused(app.port, client(pki, pki.rogue), token).code() == grpc.StatusCode.UNAVAILABLE


def test_the_partner_port_requires_a_certificate_the_main_port_does_not(
    pki: Pki, serve: Serve, tokens: HarnessKeys
) -> None:
    app = serve(server_tls(pki, IDC_TEST_PARTNER_LISTEN="127.0.0.1:0"))
    assert app.partner_port not in (0, app.port)
    token = issue(tokens, ANN)
    assert whoami(app.port, client(pki), token) == "ann@acme/acme"
    assert refused(app.partner_port, client(pki), token).code() == grpc.StatusCode.UNAVAILABLE
    assert whoami(app.partner_port, client(pki, pki.acme), token) == "ann@acme/acme"
    assert refused(app.partner_port, client(pki, pki.acme), issue(tokens, BOB)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_a_renewed_certificate_is_served_without_a_restart(
    pki: Pki, serve: Serve, tokens: HarnessKeys, tmp_path: Path
) -> None:
    old_ca, new_ca = LocalCa.create("old-ca"), LocalCa.create("new-ca")
    cert, key = old_ca.issue("idc", sans=("127.0.0.1",)).write(tmp_path, "server")
    (tmp_path / "old.pem").write_bytes(old_ca.cert_pem)
    (tmp_path / "new.pem").write_bytes(new_ca.cert_pem)
    app = serve(ServerTls.from_env("test", {
        "IDC_TLS_CERT_FILE": str(cert), "IDC_TLS_KEY_FILE": str(key),
    }))
    token = issue(tokens, ANN)
    trusts_new = client(pki, ca=tmp_path / "new.pem")
    assert whoami(app.port, client(pki, ca=tmp_path / "old.pem"), token) == "ann@acme/acme"
    assert refused(app.port, trusts_new, token).code() == grpc.StatusCode.UNAVAILABLE
    renewed = new_ca.issue("idc", sans=("127.0.0.1",))
    stamp = cert.stat().st_mtime_ns
    renewed.write(tmp_path, "server")
    os.utime(cert, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even on coarse clocks
    assert whoami(app.port, trusts_new, token) == "ann@acme/acme"


def test_a_renewed_client_ca_is_trusted_on_the_partner_port_without_a_restart(
    pki: Pki, serve: Serve, tokens: HarnessKeys, tmp_path: Path
) -> None:
    trusted = tmp_path / "partner-ca.pem"
    trusted.write_bytes(pki.ca.read_bytes())
    app = serve(server_tls(pki, IDC_TLS_CA_FILE=str(trusted),
                           IDC_TEST_PARTNER_LISTEN="127.0.0.1:0"))
    token = issue(tokens, ANN)
    # The partner's new certificate comes from a CA the server does not trust yet.
    assert refused(app.partner_port, client(pki, pki.rogue), token).code() == (
        grpc.StatusCode.UNAVAILABLE
    )
    stamp = trusted.stat().st_mtime_ns
    trusted.write_bytes(pki.ca.read_bytes() + pki.rogue_ca.read_bytes())
    os.utime(trusted, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even on coarse clocks
    assert whoami(app.partner_port, client(pki, pki.rogue), token) == "ann@acme/acme"
    assert whoami(app.partner_port, client(pki, pki.acme), token) == "ann@acme/acme"


def test_a_service_without_a_certificate_or_explicit_plaintext_refuses_to_start(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDC_")}
    env |= {"IDC_KAFKA_BOOTSTRAP": "127.0.0.1:9", "IDC_VAR_DIR": str(tmp_path),
            **HarnessKeys.generate().env()}
    done = subprocess.run(
        [sys.executable, "-m", "services.order"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "IDC_TLS_CERT_FILE is not set" in done.stderr
    assert "IDC_TLS=off" in done.stderr


def test_the_health_port_answers_probes_in_plaintext_and_serves_nothing_else(
    pki: Pki, serve: Serve
) -> None:
    address = f"127.0.0.1:{free_port()}"
    app = serve(server_tls(pki, IDC_TLS_HEALTH_LISTEN=address))
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="liveness"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as business:
            channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
        assert business.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert refused(app.port, ClientTls.plaintext(), None).code() == grpc.StatusCode.UNAVAILABLE
