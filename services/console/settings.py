"""Settings of the console, from ``IDC_CONSOLE_*`` and the addresses of the gRPC services."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.config import ConfigError, non_negative_int
from services.common.service_table import CONSOLE, ORDER, PROVISIONING
from services.common.tls import ClientTls


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{name}={raw!r} is not valid: expected host:port")
    return raw


@dataclass(frozen=True)
class ConsoleSettings:
    # Where the web server listens (http, or https when a certificate is given).
    listen: str = CONSOLE.default_address
    # The order service (OrderService, ApprovalService).
    order_address: str = ORDER.default_address
    # The provisioning service (ProvisioningService).
    provisioning_address: str = PROVISIONING.default_address
    # PEM certificate and key; both set serves https (and session cookies become Secure).
    tls_cert: str = ""
    tls_key: str = ""
    # A session unused this long is signed out.
    session_idle_s: int = 8 * 3600
    # Deadline of each unary call to the services.
    call_timeout_s: int = 15
    # How it dials the services (IDC_TLS*; plaintext only with IDC_TLS=off).
    grpc_tls: ClientTls = field(default_factory=ClientTls)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            listen=_address(env, "IDC_CONSOLE_LISTEN", d.listen),
            order_address=_address(env, "IDC_ORDER_ADDRESS", d.order_address),
            provisioning_address=_address(
                env, "IDC_PROVISIONING_ADDRESS", d.provisioning_address
            ),
            tls_cert=env.get("IDC_CONSOLE_TLS_CERT", "").strip(),
            tls_key=env.get("IDC_CONSOLE_TLS_KEY", "").strip(),
            session_idle_s=non_negative_int(env, "IDC_CONSOLE_SESSION_IDLE_S", d.session_idle_s),
            call_timeout_s=non_negative_int(env, "IDC_CONSOLE_CALL_TIMEOUT_S", d.call_timeout_s),
            grpc_tls=ClientTls.from_env(env),
        )
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ConfigError("IDC_CONSOLE_TLS_CERT and IDC_CONSOLE_TLS_KEY must be set together")
        for name, value in (
            ("IDC_CONSOLE_SESSION_IDLE_S", settings.session_idle_s),
            ("IDC_CONSOLE_CALL_TIMEOUT_S", settings.call_timeout_s),
        ):
            if value == 0:
                raise ConfigError(f"{name} must be greater than zero")
        return settings
