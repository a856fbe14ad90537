"""TLS settings from the environment: plaintext only when IDC_TLS=off says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError
from services.common.tls import ClientCertMode, ClientTls, ServerTls


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    return {
        "IDC_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "IDC_TLS_KEY_FILE": str(tmp_path / "key.pem"),
        "IDC_TLS_CA_FILE": str(tmp_path / "ca.pem"),
    }


def test_a_server_without_a_certificate_or_explicit_plaintext_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"IDC_TLS_CERT_FILE is not set.*IDC_TLS=off"):
        ServerTls.from_env("order", {})
    with pytest.raises(ConfigError, match="IDC_TLS_CERT_FILE is not set"):
        ServerTls.from_env("order", {"IDC_TLS": "on"})


def test_explicit_plaintext() -> None:
    assert not ServerTls.from_env("order", {"IDC_TLS": "off"}).enabled
    assert not ClientTls.from_env({"IDC_TLS": "OFF"}).enabled
    with pytest.raises(ConfigError, match="IDC_TLS='maybe' is not valid"):
        ServerTls.from_env("order", {"IDC_TLS": "maybe"})


def test_a_server_with_its_files(files: dict[str, str]) -> None:
    tls = ServerTls.from_env("order", files)
    assert tls.enabled and tls.client_cert is ClientCertMode.OFF
    assert str(tls.cert_file) == files["IDC_TLS_CERT_FILE"]
    assert tls.partner_listen is None and dict(tls.tenants) == {}


def test_a_certificate_without_its_key_names_the_missing_variable(
    files: dict[str, str],
) -> None:
    with pytest.raises(ConfigError, match="IDC_TLS_KEY_FILE is not set"):
        ServerTls.from_env("order", {"IDC_TLS_CERT_FILE": files["IDC_TLS_CERT_FILE"]})
    with pytest.raises(ConfigError, match="IDC_TLS_CLIENT_CERT_FILE is not set"):
        ClientTls.from_env({"IDC_TLS_CLIENT_KEY_FILE": files["IDC_TLS_KEY_FILE"]})


def test_a_missing_file_is_named(files: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"IDC_TLS_CA_FILE=.*no such readable file"):
        ClientTls.from_env({"IDC_TLS_CA_FILE": str(tmp_path / "absent.pem")})


def test_required_client_certificates_need_the_ca(files: dict[str, str]) -> None:
    without_ca = {k: v for k, v in files.items() if k != "IDC_TLS_CA_FILE"}
    for extra in ({"IDC_TLS_CLIENT_CERT": "required"},
                  {"IDC_ORDER_PARTNER_LISTEN": "0.0.0.0:50061"}):
        with pytest.raises(ConfigError, match="IDC_TLS_CA_FILE is not set"):
            ServerTls.from_env("order", {**without_ca, **extra})
    tls = ServerTls.from_env("order", {**files, "IDC_ORDER_PARTNER_LISTEN": "0.0.0.0:50061"})
    assert tls.partner_listen == "0.0.0.0:50061"
    with pytest.raises(ConfigError, match="IDC_TLS_CLIENT_CERT='sometimes' is not valid"):
        ServerTls.from_env("order", {**files, "IDC_TLS_CLIENT_CERT": "sometimes"})
    with pytest.raises(ConfigError, match="IDC_ORDER_PARTNER_LISTEN='nowhere' is not valid"):
        ServerTls.from_env("order", {**files, "IDC_ORDER_PARTNER_LISTEN": "nowhere"})


def test_the_tenant_map(files: dict[str, str], tmp_path: Path) -> None:
    mapping = tmp_path / "tenants.toml"
    mapping.write_text('[tenants]\n"integrator.acme.example" = "acme"\n')
    env = {**files, "IDC_TLS_CLIENT_TENANTS_FILE": str(mapping)}
    assert dict(ServerTls.from_env("order", env).tenants) == {"integrator.acme.example": "acme"}
    for bad in ('[tenants]\n"x" = 3\n', "[tenants\n"):
        mapping.write_text(bad)
        with pytest.raises(ConfigError, match="IDC_TLS_CLIENT_TENANTS_FILE="):
            ServerTls.from_env("order", env)


def test_a_client_trusts_the_system_roots_unless_given_a_ca(files: dict[str, str]) -> None:
    default = ClientTls.from_env({})
    assert default.enabled and default.ca_file is None
    named = ClientTls.from_env({**files, "IDC_TLS_SERVER_NAME": "order.idc.svc"})
    assert str(named.ca_file) == files["IDC_TLS_CA_FILE"]
    assert named.options() == [("grpc.ssl_target_name_override", "order.idc.svc")]
