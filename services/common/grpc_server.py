"""gRPC server bootstrap shared by every service.

One place decides: which status code a domain error becomes (``status_for``), how a bearer
token becomes a principal, what the health service says, and how the process shuts down.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from services.common import call_limits, deadlines, errors, metric_catalogue, metrics
from services.common.auth import TokenStore, bind_principal, parse_bearer, reset_principal
from services.common.config import ServiceSettings
from services.common.db import GRPC_THREADS
from services.common.tls import ClientTls, PeerTenants, ServerTls, bind, health_only_server

if TYPE_CHECKING:
    # grpc-stubs makes these generic; the runtime classes are not subscriptable.
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamClientInterceptor = grpc.UnaryStreamClientInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor
    _UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor
    _UnaryStreamClientInterceptor = grpc.UnaryStreamClientInterceptor

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
_RPC_DURATION = metrics.histogram(metric_catalogue.RPC_DURATION)

# Health and reflection are open to anyone who can reach the port (kubelet probes, grpcurl).
PUBLIC_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
     "grpc.reflection.v1.ServerReflection"}
)

_STATUS_BY_ERROR: tuple[tuple[type[errors.DomainError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.CapacityExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Throttled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)
# google.rpc.ErrorInfo: the domain, and the stable reason of each class of error (a
# DomainError may name a finer one of its own, a Throttled always does); the table in
# README's Security section, Limits, lists them all.
ERROR_DOMAIN = "idc.example"
_REASON_BY_ERROR: tuple[tuple[type[errors.DomainError], str], ...] = (
    (errors.InvalidArgument, "INVALID_REQUEST"),
    (errors.NotFound, "NOT_FOUND"),
    (errors.AlreadyExists, "ALREADY_EXISTS"),
    (errors.FailedPrecondition, "FAILED_PRECONDITION"),
    (errors.CapacityExhausted, "CAPACITY_EXHAUSTED"),
    (errors.PermissionDenied, "PERMISSION_DENIED"),
    (errors.Unauthenticated, "UNAUTHENTICATED"),
    (errors.Unavailable, "PEER_UNAVAILABLE"),
    (errors.DeadlineExceeded, "DEADLINE_EXCEEDED"),
)
INTERNAL_REASON = "INTERNAL_ERROR"
UNIMPLEMENTED_REASON = "NOT_IMPLEMENTED"
UNKNOWN_REASON = "UNKNOWN_ERROR"


def reason_for(error: errors.DomainError) -> str:
    """The stable ErrorInfo reason of ``error`` (the REST facade's problems carry it too)."""
    return error.reason or next(
        (r for error_type, r in _REASON_BY_ERROR if isinstance(error, error_type)),
        UNKNOWN_REASON)


def status_for(error: errors.DomainError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error: BadRequest details where useful, RetryInfo
    when the caller may retry after a known delay, and always ErrorInfo."""
    code = grpc.StatusCode.UNKNOWN
    for error_type, status_code in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            code = status_code
            break
    reason = reason_for(error)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        _add_detail(status, bad_request)
    if isinstance(error, errors.Throttled) and error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1, round(error.retry_after_s * 1e9)))
        _add_detail(status, error_details_pb2.RetryInfo(retry_delay=delay))
    return _with_reason(status, reason)


def _add_detail(status: status_pb2.Status, message: Any) -> None:
    detail = any_pb2.Any()
    detail.Pack(message)
    status.details.append(detail)


def _with_reason(status: status_pb2.Status, reason: str) -> status_pb2.Status:
    _add_detail(status, error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    return status


def _internal_status() -> status_pb2.Status:
    return _with_reason(status_pb2.Status(
        code=code_pb2.INTERNAL, message="internal error; the server log has the details"
    ), INTERNAL_REASON)


class ServiceInterceptor(_ServerInterceptor):
    """Authenticates, traces and maps errors for every business RPC."""

    def __init__(self, tokens: TokenStore | None,
                 limits: call_limits.LimitSettings | None = None,
                 peers: PeerTenants | None = None) -> None:
        self._tokens = tokens
        self._guard = call_limits.CallGuard(limits or call_limits.LimitSettings())
        self._peers = peers or PeerTenants({})

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if method.lstrip("/").split("/", 1)[0] in PUBLIC_SERVICES:
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, metadata),
                request_deserializer=call_limits.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, metadata),
                request_deserializer=call_limits.tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, method, metadata),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _authenticate(self, metadata: dict[str, Any]) -> Any:
        if self._tokens is None:
            return None
        principal = self._tokens.principal_for(parse_bearer(metadata.get("authorization")))
        if principal is None:
            raise errors.Unauthenticated("the bearer token is unknown or revoked")
        return principal

    @contextmanager
    def _rpc_scope(
        self, method: str, metadata: dict[str, Any], context: grpc.ServicerContext
    ) -> Iterator[None]:
        """Span, principal, error mapping and the call's metric, unary or streaming."""
        parent = propagate.extract(metadata)
        started = time.perf_counter()
        try:
            with self._traced_call(method, metadata, context, parent):
                yield
        finally:
            code = context.code()  # type: ignore[attr-defined]
            _RPC_DURATION.record(
                time.perf_counter() - started,
                {
                    "rpc.system": "grpc",
                    "rpc.method": method.lstrip("/"),
                    "rpc.response.status_code": (code or grpc.StatusCode.OK).name,
                },
            )

    @contextmanager
    def _traced_call(
        self, method: str, metadata: dict[str, Any], context: grpc.ServicerContext,
        parent: otel_context.Context,
    ) -> Iterator[None]:
        with tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER):
            try:
                def authenticate() -> Any:
                    principal = self._authenticate(metadata)
                    self._peers.admit(context, principal)  # a client certificate binds a tenant
                    return principal

                principal_token = bind_principal(self._guard.admit(authenticate, context.peer()))
                try:
                    yield
                finally:
                    reset_principal(principal_token)
            except errors.DomainError as error:
                context.abort_with_status(rpc_status.to_status(status_for(error)))
            except NotImplementedError:
                context.abort_with_status(rpc_status.to_status(_unimplemented(method)))
            except Exception as error:
                if _is_abort(error, context):
                    raise
                late = call_limits.late_error(error, method)
                if late is not None:
                    context.abort_with_status(rpc_status.to_status(status_for(late)))
                log.exception("unhandled error in %s", method)
                context.abort_with_status(rpc_status.to_status(_internal_status()))

    def _unary(
        self, behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str,
        metadata: dict[str, Any],
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            # The deadline covers the token lookup too (it may wait for a database lock).
            with deadlines.bound(self._guard.unary_timeout_s(context)), self._rpc_scope(
                    method, metadata, context):
                call_limits.check_decoded(request, method)
                return behaviour(request, context)

        return handle

    def _streaming(
        self, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str,
        metadata: dict[str, Any],
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._rpc_scope(method, metadata, context), self._guard.stream(
                    call_limits.current_caller(), context.peer()):
                call_limits.check_decoded(request, method)
                yield from behaviour(request, context)

        return handle


def _unimplemented(method: str) -> status_pb2.Status:
    return _with_reason(status_pb2.Status(
        code=code_pb2.UNIMPLEMENTED, message=f"{method} is not implemented by this server yet"
    ), UNIMPLEMENTED_REASON)


def _is_abort(error: Exception, context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after setting the code; let it through.
    code = context.code()  # type: ignore[attr-defined]
    return type(error) is Exception and code is not None and code != grpc.StatusCode.OK


HealthCheck = Callable[[], bool]
_WORKER_CHECK = "worker:"
# The texts of what is wrong now (empty when nothing is): an alarm for operators that does
# not make the process unhealthy (a saga stuck on a router, an order waiting too long).
AlarmCheck = Callable[[], Sequence[str]]
ALARM_SERVICE_PREFIX = "idc.alarm."
# SERVING while the process runs and none of its workers has died; unlike the whole server's
# status it does not follow the database or the broker (Kubernetes' liveness probe asks it:
# restarting a process does not bring a database back).
LIVENESS_SERVICE = "liveness"


@dataclass
class HealthMonitor:
    """Keeps the standard health service truthful.

    NOT_SERVING until ``mark_started``; afterwards SERVING only while every check passes;
    NOT_SERVING again from the moment shutdown begins.

    Alarms are reported beside it without changing it: each alarm is the health service
    name ``idc.alarm.<name>``, NOT_SERVING while raised, and its texts are logged when it
    is raised, changes and clears (:meth:`active_alarms` gives them to an API).
    """

    servicer: health.HealthServicer
    services: Sequence[str]
    checks: dict[str, HealthCheck] = field(default_factory=dict)
    alarms: dict[str, AlarmCheck] = field(default_factory=dict)
    interval_s: float = 2.0
    _started: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _failing: list[str] = field(default_factory=list)
    _raised: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._publish(serving=False)
        self.servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    def _publish(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.services):
            self.servicer.set(name, status)

    def evaluate(self) -> bool:
        failing = [name for name, check in self.checks.items() if not _safe(check)]
        if failing != self._failing:
            if failing:
                log.warning("health checks failing: %s", ", ".join(failing))
            elif self._failing:
                log.info("health checks recovered")
            self._failing = failing
        serving = self._started.is_set() and not self._stopping.is_set() and not failing
        self._publish(serving)
        if not self._stopping.is_set():
            dead = any(name.startswith(_WORKER_CHECK) for name in failing)
            self.servicer.set(
                LIVENESS_SERVICE,
                health_pb2.HealthCheckResponse.NOT_SERVING
                if dead
                else health_pb2.HealthCheckResponse.SERVING,
            )
        self._evaluate_alarms()
        return serving

    def _evaluate_alarms(self) -> None:
        for name, check in self.alarms.items():
            try:
                texts = list(check())
            except Exception as exc:
                texts = [f"alarm check failed: {type(exc).__name__}: {exc}"]
            before = self._raised.get(name, [])
            if texts != before:
                if texts:
                    log.warning("alarm %s: %s", name, "; ".join(texts))
                else:
                    log.info("alarm %s cleared", name)
            if texts:
                self._raised[name] = texts
            else:
                self._raised.pop(name, None)
            self.servicer.set(
                ALARM_SERVICE_PREFIX + name,
                health_pb2.HealthCheckResponse.NOT_SERVING
                if texts
                else health_pb2.HealthCheckResponse.SERVING,
            )

    def active_alarms(self) -> dict[str, list[str]]:
        """The alarms raised at the last evaluation, with their texts."""
        return {name: list(texts) for name, texts in self._raised.items()}

    def mark_started(self) -> None:
        self._started.set()
        self.evaluate()

    def begin_shutdown(self) -> None:
        self._stopping.set()
        self.servicer.enter_graceful_shutdown()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            self.evaluate()


def _safe(check: HealthCheck) -> bool:
    try:
        return check()
    except Exception:
        return False


class Worker:
    """A background loop owned by a service (outbox relay, consumer, meter)."""

    name: str = "worker"

    def alarms(self) -> dict[str, AlarmCheck]:
        """What this worker reports to operators beside health (see HealthMonitor)."""
        return {}

    def run(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources after ``run`` has returned."""


@dataclass
class GrpcApp:
    """Everything a service process runs: its servicers, health checks and workers."""

    settings: ServiceSettings
    register: Callable[[grpc.Server], Sequence[str]]
    tokens: TokenStore | None
    checks: dict[str, HealthCheck] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    server: grpc.Server | None = None
    port: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    monitor: HealthMonitor | None = None
    limits: call_limits.LimitSettings = field(default_factory=call_limits.LimitSettings)
    # Built in code (tests) without one: plaintext. A process started from the environment
    # reads ServerTls.from_env, which is plaintext only when IDC_TLS=off says so.
    tls: ServerTls = field(default_factory=ServerTls)
    partner_port: int = 0
    _health_only: grpc.Server | None = None

    def start(self) -> int:
        """Bind, register and start; returns the bound port (useful when asked for :0)."""
        options = [
            ("grpc.max_receive_message_length", self.settings.max_message_bytes),
            ("grpc.max_send_message_length", self.settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=GRPC_THREADS, thread_name_prefix=self.settings.name),
            interceptors=[
                ServiceInterceptor(self.tokens, self.limits, PeerTenants(self.tls.tenants))
            ],
            options=options,
            maximum_concurrent_rpcs=256,
        )
        names = list(self.register(server))
        health_servicer = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        alarms = {name: check for w in self.workers for name, check in w.alarms().items()}
        self.monitor = HealthMonitor(health_servicer, names, dict(self.checks), alarms)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.port, self.partner_port = bind(server, self.settings.listen, self.tls)
        if self.port == 0:
            raise errors.Unavailable(f"cannot listen on {self.settings.listen}")
        server.start()
        self.server = server
        if self.tls.health_listen is not None:
            self._health_only = health_only_server(health_servicer, self.tls.health_listen)
        self._spawn("health", self.monitor.run)
        for worker in self.workers:
            self._spawn(worker.name, worker.run)
        self.monitor.mark_started()
        host = self.settings.listen.rpartition(":")[0]
        log.info("%s listening on %s:%d", self.settings.name, host, self.port)
        return self.port

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        def run() -> None:
            try:
                target(self.stop_event)
            except Exception:
                log.exception("background worker %s stopped with an error", name)
                if self.monitor is not None:
                    self.monitor.checks[f"{_WORKER_CHECK}{name}"] = lambda: False
                    self.monitor.evaluate()

        thread = threading.Thread(target=run, name=f"{self.settings.name}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop taking calls, finish in-flight ones within the grace period, stop workers."""
        if self.monitor is not None:
            self.monitor.begin_shutdown()
        if self.server is not None:
            self.server.stop(self.settings.grace_period_s).wait()
        if self._health_only is not None:
            self._health_only.stop(0)
        self.stop_event.set()
        deadline = time.monotonic() + self.settings.grace_period_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for worker in self.workers:
            worker.close()
        for callback in self.on_stop:
            callback()

    def serve_forever(self) -> int:
        """Run until SIGTERM or SIGINT, then shut down gracefully; returns the exit code."""
        stop_requested = threading.Event()

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start()
        stop_requested.wait()
        self.stop()
        log.info("%s stopped", self.settings.name)
        return 0


class DefaultDeadline(_UnaryUnaryClientInterceptor, _UnaryStreamClientInterceptor):
    """Client side: every call without its own deadline gets ``timeout_s``."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    def _with_deadline(self, details: Any) -> Any:
        # Inside a call being served, a peer call gets at most the time that call has left.
        deadlines.check(f"calling {details.method}")
        left = deadlines.remaining_s()
        timeout = details.timeout if details.timeout is not None else self._timeout_s
        if left is not None:
            timeout = min(timeout, left)
        if timeout == details.timeout:
            return details
        return _CallDetails(
            details.method, timeout, details.metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_deadline(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_deadline(details), request)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self, method: str, timeout: float | None, metadata: Any, credentials: Any,
        wait_for_ready: Any, compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def client_channel(
    target: str, default_timeout_s: float = 30.0, tls: ClientTls | None = None
) -> grpc.Channel:
    """A channel whose calls carry a default deadline; TLS as ``tls`` says (default: the
    ``IDC_TLS*`` environment, plaintext only with ``IDC_TLS=off``)."""
    tls = ClientTls.from_env() if tls is None else tls
    return grpc.intercept_channel(tls.channel(target), DefaultDeadline(default_timeout_s))


def call_metadata(token: str | None) -> list[tuple[str, str]]:
    """Metadata for one call: bearer token and the current trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=otel_context.get_current())
    metadata = list(carrier.items())
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    return metadata
