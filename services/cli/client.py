"""Where idcctl's servers are, which token it presents, and one traced call helper."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from idc.billing.v1 import billing_service_pb2_grpc
from idc.ops.v1 import (
    approval_service_pb2_grpc,
    audit_service_pb2_grpc,
    event_admin_service_pb2_grpc,
    token_service_pb2_grpc,
)
from idc.order.v1 import order_service_pb2_grpc
from idc.provisioning.v1 import provisioning_service_pb2_grpc
from services.cli.errors import CliError, ExitCode
from services.common.config import ConfigError
from services.common.grpc_server import call_metadata, client_channel
from services.common.service_table import API_SERVICES, METER
from services.common.tls import CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, ClientTls

R = TypeVar("R", bound=Message)

tracer = trace.get_tracer("idcctl")

# The meter's API is only EventAdminService (idcctl ops dlq / outbox).
DEFAULT_ADDRESSES = {
    service.name: service.default_address for service in (*API_SERVICES, METER)
}
# idcctl's TLS file flags and the variables they stand in for.
TLS_FLAGS = {"--ca-file": CA_FILE, "--client-cert": CLIENT_CERT_FILE,
             "--client-key": CLIENT_KEY_FILE}


@dataclass(frozen=True)
class Connection:
    """Server addresses, the bearer token and the deadline of every call."""

    addresses: Mapping[str, str]
    token: str
    deadline_s: float
    # TLS of every channel (IDC_TLS*: the CA to trust, a client certificate to present).
    tls: ClientTls = field(default_factory=ClientTls)

    @classmethod
    def resolve(
        cls,
        flags: Mapping[str, str | None],
        token: str | None,
        deadline_s: float | None,
        env: Mapping[str, str] | None = None,
        tls_flags: Mapping[str, str | None] | None = None,
    ) -> Connection:
        """Flags win over ``IDC_<SERVICE>_ADDRESS`` / ``IDC_TOKEN`` / ``IDC_TLS_*_FILE``
        (``tls_flags``, by flag name: :data:`TLS_FLAGS`), which win over defaults."""
        env = os.environ if env is None else env
        addresses = {
            service: flags.get(service)
            or env.get(f"IDC_{service.upper()}_ADDRESS", "").strip()
            or default
            for service, default in DEFAULT_ADDRESSES.items()
        }
        raw_deadline = env.get("IDC_DEFAULT_DEADLINE_S", "").strip()
        if deadline_s is None:
            try:
                deadline_s = float(raw_deadline) if raw_deadline else 30.0
            except ValueError:
                raise CliError(
                    f"IDC_DEFAULT_DEADLINE_S={raw_deadline!r} is not a number of seconds",
                    ExitCode.USAGE,
                ) from None
        given = {TLS_FLAGS[flag]: value for flag, value in (tls_flags or {}).items() if value}
        try:
            tls = ClientTls.from_env({**env, **given})
        except ConfigError as error:
            # Name the flags the user typed rather than the variables they stand in for.
            message = str(error)
            for flag, variable in TLS_FLAGS.items() if given else ():
                message = message.replace(
                    variable, flag if variable in given else f"{flag} ({variable})")
            raise CliError(message, ExitCode.USAGE) from None
        return cls(addresses, token or env.get("IDC_TOKEN", "").strip(), deadline_s, tls)


def story_context(env: Mapping[str, str] | None = None) -> otel_context.Context | None:
    """The parent trace context from ``TRACEPARENT`` (and ``TRACESTATE``), if set.

    Lets a script (``make demo``, a CI job) put every idcctl call it makes into one trace,
    as the OpenTelemetry proposal for context in environment variables describes.
    """
    env = os.environ if env is None else env
    carrier = {
        name.lower(): env[name] for name in ("TRACEPARENT", "TRACESTATE") if env.get(name)
    }
    return propagate.extract(carrier) if carrier else None


class Api:
    """Stubs of every service, opened lazily, and ``call`` / ``stream`` with tracing."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = client_channel(
                self.connection.addresses[service], self.connection.deadline_s,
                self.connection.tls,
            )
        return self._channels[service]

    @property
    def orders(self) -> order_service_pb2_grpc.OrderServiceStub:
        return order_service_pb2_grpc.OrderServiceStub(self._channel("order"))

    @property
    def approvals(self) -> approval_service_pb2_grpc.ApprovalServiceStub:
        return approval_service_pb2_grpc.ApprovalServiceStub(self._channel("order"))

    @property
    def provisioning(self) -> provisioning_service_pb2_grpc.ProvisioningServiceStub:
        return provisioning_service_pb2_grpc.ProvisioningServiceStub(
            self._channel("provisioning")
        )

    @property
    def billing(self) -> billing_service_pb2_grpc.BillingServiceStub:
        return billing_service_pb2_grpc.BillingServiceStub(self._channel("billing"))

    @property
    def tokens(self) -> token_service_pb2_grpc.TokenServiceStub:
        return token_service_pb2_grpc.TokenServiceStub(self._channel("order"))

    def audit(self, service: str) -> audit_service_pb2_grpc.AuditServiceStub:
        """The order and provisioning services offer their audit chains."""
        return audit_service_pb2_grpc.AuditServiceStub(self._channel(service))

    def event_admin(self, service: str) -> event_admin_service_pb2_grpc.EventAdminServiceStub:
        """Every service with a database offers it, for its own outbox."""
        return event_admin_service_pb2_grpc.EventAdminServiceStub(self._channel(service))

    def _span(self, service: str, method: Callable[..., Any]) -> AbstractContextManager[Any]:
        full_name = _method_name(method)
        rpc_service, _, rpc_method = full_name.rpartition("/")
        host, _, port = self.connection.addresses[service].rpartition(":")
        return tracer.start_as_current_span(
            full_name,
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": rpc_service,
                "rpc.method": rpc_method,
                "server.address": host,
                "server.port": int(port) if port.isdigit() else 0,
            },
        )

    def call(self, service: str, method: Callable[..., R], request: Message) -> R:
        """One unary call: CLIENT span, bearer token and traceparent in the metadata."""
        with self._span(service, method) as span:
            try:
                return method(request, metadata=call_metadata(self.connection.token))
            except grpc.RpcError as error:
                span.set_attribute("rpc.grpc.status_code", error.code().value[0])
                span.set_status(Status(StatusCode.ERROR))
                raise

    def stream(
        self, service: str, method: Callable[..., Any], request: Message,
        timeout_s: float | None = None,
    ) -> Iterator[Any]:
        """A server stream, read to its end inside one CLIENT span."""
        with self._span(service, method) as span:
            try:
                kwargs: dict[str, Any] = {"metadata": call_metadata(self.connection.token)}
                if timeout_s is not None:
                    kwargs["timeout"] = timeout_s
                yield from method(request, **kwargs)
            except grpc.RpcError as error:
                span.set_attribute("rpc.grpc.status_code", error.code().value[0])
                span.set_status(Status(StatusCode.ERROR))
                raise

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def _method_name(method: Callable[..., Any]) -> str:
    # Stub attributes are grpc multi-callables whose `_method` is the full path
    # ("/idc.order.v1.OrderService/CreateOrder", bytes in some grpc versions).
    raw = getattr(method, "_method", b"")
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    return name.lstrip("/") or "unknown/unknown"
