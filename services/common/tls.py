"""TLS for every gRPC server and client, and partner mTLS.

Settings come from ``IDC_TLS*`` variables. TLS is on unless ``IDC_TLS=off`` says otherwise:
a server started from the environment with neither a certificate nor that explicit switch
refuses to start, naming ``IDC_TLS_CERT_FILE``. A client with TLS on trusts
``IDC_TLS_CA_FILE`` (else the system's roots) and may present a client certificate.

Partner mTLS. gRPC Python can only *require* client certificates or not ask for one at all
(there is no "request but allow none"), so a server asks for them in two ways:
``IDC_TLS_CLIENT_CERT=required`` makes its one port require a certificate signed by
``IDC_TLS_CA_FILE``; ``IDC_<SERVICE>_PARTNER_LISTEN`` adds a second port that requires one
while the main port serves staff and tools without. A certificate's subject common name
(CN) is looked up in ``IDC_TLS_CLIENT_TENANTS_FILE``; one that maps to no tenant is refused
(UNAUTHENTICATED). A certificate *binds*, it does not authenticate: the bearer token still
says who calls, and the call is allowed only when that principal is a customer of the
certificate's tenant (else PERMISSION_DENIED). A stolen partner certificate without a
token of its tenant is worth nothing, and a partner's token is refused over another
partner's certificate.
"""

from __future__ import annotations

import enum
import os
import threading
import tomllib
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from services.common import errors
from services.common.config import ConfigError

if TYPE_CHECKING:
    from services.common.auth import Principal

TLS_SWITCH = "IDC_TLS"
CERT_FILE = "IDC_TLS_CERT_FILE"
KEY_FILE = "IDC_TLS_KEY_FILE"
CA_FILE = "IDC_TLS_CA_FILE"
CLIENT_CERT_FILE = "IDC_TLS_CLIENT_CERT_FILE"
CLIENT_KEY_FILE = "IDC_TLS_CLIENT_KEY_FILE"
CLIENT_CERT_MODE = "IDC_TLS_CLIENT_CERT"
TENANTS_FILE = "IDC_TLS_CLIENT_TENANTS_FILE"
SERVER_NAME = "IDC_TLS_SERVER_NAME"
HEALTH_LISTEN = "IDC_TLS_HEALTH_LISTEN"
# The key gRPC puts a verified client certificate's subject CN under in the auth context.
_PEER_CN = "x509_common_name"


class ClientCertMode(enum.StrEnum):
    OFF = "off"  # the main port asks for no client certificate
    REQUIRED = "required"  # the main port refuses a client without one


def _get(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def _switch(env: Mapping[str, str]) -> bool:
    raw = (_get(env, TLS_SWITCH) or "on").lower()
    if raw not in {"on", "off"}:
        raise ConfigError(f"{TLS_SWITCH}={raw!r} is not valid: expected on or off")
    return raw == "on"


def _file(env: Mapping[str, str], name: str) -> Path | None:
    raw = _get(env, name)
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r} is not valid: no such readable file")
    return path


def _pair(env: Mapping[str, str], cert_name: str, key_name: str) -> tuple[Path, Path] | None:
    cert, key = _file(env, cert_name), _file(env, key_name)
    if (cert is None) != (key is None):
        missing = key_name if key is None else cert_name
        raise ConfigError(f"{missing} is not set: {cert_name} and {key_name} go together")
    return None if cert is None or key is None else (cert, key)


def _listen(env: Mapping[str, str], name: str) -> str | None:
    raw = _get(env, name)
    if raw is None:
        return None
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{name}={raw!r} is not valid: expected host:port")
    return raw


def load_tenant_map(path: Path, name: str = TENANTS_FILE) -> dict[str, str]:
    """``[tenants]`` of a TOML file: client certificate CN -> tenant id."""
    try:
        table = tomllib.loads(path.read_text()).get("tenants", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{name}={str(path)!r} is not valid: {exc}") from exc
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in table.items()
    ):
        raise ConfigError(
            f"{name}={str(path)!r} is not valid: expected a [tenants] table of "
            '"certificate CN" = "tenant id"'
        )
    return dict(table)


@dataclass(frozen=True)
class ServerTls:
    """A server's TLS: ``enabled`` False only when ``IDC_TLS=off`` was set (or in code)."""

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    client_cert: ClientCertMode = ClientCertMode.OFF
    tenants: Mapping[str, str] = field(default_factory=dict)
    # Second port whose clients must present a certificate (partners), or None.
    partner_listen: str | None = None
    # A plaintext port serving only gRPC health, for Kubernetes' probes (the kubelet's gRPC
    # probe cannot speak TLS); it carries no token and no business data.
    health_listen: str | None = None

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> ServerTls:
        env = os.environ if env is None else env
        if not _switch(env):
            return cls(enabled=False)
        pair = _pair(env, CERT_FILE, KEY_FILE)
        if pair is None:
            raise ConfigError(
                f"{CERT_FILE} is not set: give the server's certificate and key "
                f"({CERT_FILE}, {KEY_FILE}), or set {TLS_SWITCH}=off to serve plaintext"
            )
        raw_mode = (_get(env, CLIENT_CERT_MODE) or "off").lower()
        try:
            mode = ClientCertMode(raw_mode)
        except ValueError:
            raise ConfigError(
                f"{CLIENT_CERT_MODE}={raw_mode!r} is not valid: expected off or required"
            ) from None
        partner_listen = _listen(env, f"IDC_{service.upper()}_PARTNER_LISTEN")
        ca = _file(env, CA_FILE)
        if ca is None and (mode is ClientCertMode.REQUIRED or partner_listen):
            raise ConfigError(
                f"{CA_FILE} is not set: client certificates are required "
                f"({CLIENT_CERT_MODE}=required or IDC_{service.upper()}_PARTNER_LISTEN), and "
                "are verified against it"
            )
        tenants_file = _file(env, TENANTS_FILE)
        return cls(
            enabled=True, cert_file=pair[0], key_file=pair[1], ca_file=ca, client_cert=mode,
            tenants=load_tenant_map(tenants_file) if tenants_file else {},
            partner_listen=partner_listen, health_listen=_listen(env, HEALTH_LISTEN),
        )

    def credentials(self, require_client_cert: bool) -> grpc.ServerCredentials:
        """Server credentials that read the key pair again when its files change
        (cert-manager renews them in place), so a renewal needs no restart."""
        assert self.cert_file is not None and self.key_file is not None
        roots = self.ca_file if require_client_cert else None
        reloader = _KeyPairReloader(self.cert_file, self.key_file, roots)
        # grpc-stubs say the fetcher never answers None; gRPC documents None as "unchanged".
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", reloader.fetch)
        return grpc.dynamic_ssl_server_credentials(
            reloader.initial(), fetch,
            require_client_authentication=require_client_cert,
        )


class _KeyPairReloader:
    """gRPC asks ``fetch`` at each handshake; it answers None while the files are unchanged.

    The client CA (``roots``, when client certificates are checked) is followed too, so a
    renewed partner CA is trusted without a restart.
    """

    def __init__(self, cert: Path, key: Path, roots: Path | None) -> None:
        self._cert, self._key, self._roots = cert, key, roots
        self._lock = threading.Lock()
        self._stamp = self._mtimes()

    def _mtimes(self) -> tuple[int, ...]:
        files = (self._cert, self._key) if self._roots is None else (
            self._cert, self._key, self._roots)
        return tuple(path.stat().st_mtime_ns for path in files)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._key.read_bytes(), self._cert.read_bytes())],
            root_certificates=self._roots.read_bytes() if self._roots else None,
        )

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._configuration()

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = self._mtimes()
                if stamp == self._stamp:
                    return None
                configuration = self._configuration()
            except OSError:
                return None  # mid-rotation: keep serving the pair loaded before
            self._stamp = stamp
            return configuration


def bind(server: grpc.Server, listen: str, tls: ServerTls) -> tuple[int, int]:
    """Add the server's ports: ``listen`` (plaintext only when TLS is off) and the partner
    port when set; returns both bound ports (0: no partner port)."""
    if not tls.enabled:
        return server.add_insecure_port(listen), 0
    port = server.add_secure_port(
        listen, tls.credentials(tls.client_cert is ClientCertMode.REQUIRED)
    )
    partner = 0
    if tls.partner_listen is not None:
        partner = server.add_secure_port(tls.partner_listen, tls.credentials(True))
        if partner == 0:
            raise errors.Unavailable(f"cannot listen on {tls.partner_listen}")
    return port, partner


def health_only_server(servicer: health.HealthServicer, listen: str) -> grpc.Server:
    """A started plaintext server answering only the health service from ``servicer``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise errors.Unavailable(f"cannot listen on {listen}")
    server.start()
    return server


@dataclass(frozen=True)
class PeerTenants:
    """Binds a call made with a client certificate to that certificate's tenant."""

    tenants: Mapping[str, str]

    def tenant_of(self, context: grpc.ServicerContext) -> str | None:
        """The tenant of the caller's certificate; None when it presented none."""
        names = list(context.auth_context().get(_PEER_CN, ()))
        if not names:
            return None
        subject = bytes(names[0]).decode(errors="replace")
        tenant = self.tenants.get(subject)
        if tenant is None:
            raise errors.Unauthenticated(
                f"the client certificate CN={subject} is not mapped to any tenant; ask the "
                "operator to register it"
            )
        return tenant

    def admit(self, context: grpc.ServicerContext, principal: Principal | None) -> None:
        """Refuse the call unless ``principal`` may call over the caller's certificate."""
        tenant = self.tenant_of(context)
        if tenant is None or principal is None:
            return
        if principal.tenant != tenant or principal.role != "customer":
            raise errors.PermissionDenied(
                f"this connection's client certificate is of tenant {tenant}; the bearer "
                "token must be a customer token of that tenant"
            )


@dataclass(frozen=True)
class ClientTls:
    """How a client dials: plaintext only when ``IDC_TLS=off`` says so."""

    enabled: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Expected server name when it differs from the dialled host (a tunnel, an IP).
    server_name: str | None = None

    @classmethod
    def plaintext(cls) -> ClientTls:
        return cls(enabled=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientTls:
        env = os.environ if env is None else env
        if not _switch(env):
            return cls.plaintext()
        pair = _pair(env, CLIENT_CERT_FILE, CLIENT_KEY_FILE)
        return cls(
            enabled=True, ca_file=_file(env, CA_FILE),
            cert_file=pair[0] if pair else None, key_file=pair[1] if pair else None,
            server_name=_get(env, SERVER_NAME),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )

    def options(self) -> list[tuple[str, str]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]

    def channel(self, target: str) -> grpc.Channel:
        """A channel to ``target``: TLS unless this is the explicit plaintext setting."""
        if not self.enabled:
            return grpc.insecure_channel(target)
        return grpc.secure_channel(target, self.credentials(), options=self.options())

    def aio_channel(self, target: str) -> grpc.aio.Channel:
        if not self.enabled:
            return grpc.aio.insecure_channel(target)
        return grpc.aio.secure_channel(target, self.credentials(), options=self.options())
