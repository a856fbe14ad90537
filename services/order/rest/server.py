"""The facade's ASGI application (Starlette) and the worker that serves it with uvicorn in
the order service's process: bearer tokens as on the gRPC API, a deadline per call, domain
errors as problem details, and the OpenAPI document at /openapi.json."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common import deadlines
from services.common.auth import (
    Principal,
    TokenStore,
    bind_principal,
    parse_bearer,
    reset_principal,
)
from services.common.call_limits import CallGuard, LimitSettings, late_error
from services.common.errors import DomainError, InvalidArgument, Unauthenticated, Unavailable
from services.common.grpc_server import Worker
from services.common.tls import ClientCertMode, ServerTls
from services.order.rest.body import Body
from services.order.rest.openapi import OPENAPI_PATH, document
from services.order.rest.operations import Backend, Call, Operation, Reply
from services.order.rest.problems import internal_problem, problem_for
from services.order.rest.resources import OPERATIONS

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024


class Facade:
    """The gRPC interceptor's steps for a REST call: rate limits and token (the same
    CallGuard rules and settings), a deadline (IDC_UNARY_DEADLINE_S), the principal bound."""

    def __init__(self, api: Backend, tokens: TokenStore | None, limits: LimitSettings
                 ) -> None:
        self._api, self._tokens = api, tokens
        self._guard = CallGuard(limits)

    def _principal(self, request: Request) -> Principal | None:
        if self._tokens is None:
            return None
        principal = self._tokens.principal_for(parse_bearer(request.headers.get("authorization")))
        if principal is None:
            raise Unauthenticated("the bearer token is unknown or revoked")
        return principal

    def _run(self, operation: Operation, request: Request, call: Call) -> Reply:
        """In a worker thread: the use cases are synchronous, like the gRPC servicers."""
        peer = request.client.host if request.client else ""
        principal = self._guard.admit(lambda: self._principal(request), peer)
        with deadlines.bound(self._guard.settings.unary_deadline_s):
            token = bind_principal(principal)
            try:
                return operation.handler(self._api, call)
            except DomainError as error:
                late = late_error(error, operation.operation_id)
                if late is None:
                    raise
                raise late from error
            finally:
                reset_principal(token)

    def endpoint(self, operation: Operation) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            try:
                call = Call(request.url.path, dict(request.path_params),
                            dict(request.query_params),
                            await _body(request) if operation.request else None,
                            request.headers.get("idempotency-key", ""))
                reply = await run_in_threadpool(self._run, operation, request, call)
            except DomainError as error:
                return problem_for(error, request.url.path)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return internal_problem(request.url.path)
            if reply.body is None:
                return Response(status_code=reply.status, headers=reply.headers)
            return JSONResponse(reply.body, reply.status, headers=reply.headers)
        return serve


async def _body(request: Request) -> Body:
    raw = b""
    async for chunk in request.stream():  # read no further than the limit
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidArgument.for_field("body", f"is over {MAX_BODY_BYTES} bytes")
    try:
        value: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.for_field("body", "is not JSON") from None
    return Body(value)


def make_rest_app(api: Backend, tokens: TokenStore | None, limits: LimitSettings
                  ) -> Starlette:
    facade = Facade(api, tokens, limits)
    spec = document()

    async def openapi(_request: Request) -> Response:
        return JSONResponse(spec)

    routes = [Route(OPENAPI_PATH, openapi, methods=["GET"])]
    routes += [Route(op.path, facade.endpoint(op), methods=[op.method]) for op in OPERATIONS]
    return Starlette(routes=routes)


class RestWorker(Worker):
    """Serves the facade until the service stops; in-flight calls get ``grace_s`` to end."""

    name = "partner-rest"

    def __init__(self, app: Starlette, address: str, grace_s: float, tls: ServerTls) -> None:
        host, _, port = address.rpartition(":")
        # Bound now, so that the port is known (and taken) before the service reports up.
        try:
            self._socket = socket.create_server((host, int(port)))
        except OSError as error:
            raise Unavailable(f"cannot listen on {address} (IDC_ORDER_REST_ADDRESS): {error}"
                              ) from None
        self.port: int = self._socket.getsockname()[1]
        self.scheme = "https" if tls.enabled else "http"
        # The gRPC server's certificate; a client certificate when the service requires one.
        required = tls.client_cert is ClientCertMode.REQUIRED
        self._server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=max(1, round(grace_s)),
            ssl_certfile=tls.cert_file if tls.enabled else None,
            ssl_keyfile=tls.key_file if tls.enabled else None,
            ssl_ca_certs=str(tls.ca_file) if required and tls.ca_file else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if required else ssl.CERT_NONE))

    def run(self, stop: threading.Event) -> None:
        def request_exit() -> None:
            stop.wait()
            self._server.should_exit = True

        threading.Thread(target=request_exit, name="partner-rest-stop", daemon=True).start()
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def close(self) -> None:
        self._socket.close()
