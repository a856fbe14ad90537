"""Domain errors as RFC 9457 problem details (application/problem+json): the one place that
picks an HTTP status, beside grpc_server's gRPC codes; the ErrorInfo reason and the
BadRequest field violations are the same as the gRPC API's."""

from __future__ import annotations

import math
from http import HTTPStatus

from starlette.responses import JSONResponse

from services.common import errors
from services.common.grpc_server import INTERNAL_REASON, reason_for

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "https://idc.example/problems/"

_STATUS_BY_ERROR: tuple[tuple[type[errors.DomainError], HTTPStatus], ...] = (
    (errors.InvalidArgument, HTTPStatus.UNPROCESSABLE_ENTITY),
    (errors.NotFound, HTTPStatus.NOT_FOUND),
    (errors.AlreadyExists, HTTPStatus.CONFLICT),
    (errors.FailedPrecondition, HTTPStatus.CONFLICT),
    (errors.CapacityExhausted, HTTPStatus.CONFLICT),
    (errors.PermissionDenied, HTTPStatus.FORBIDDEN),
    (errors.Unauthenticated, HTTPStatus.UNAUTHORIZED),
    (errors.Unavailable, HTTPStatus.SERVICE_UNAVAILABLE),
    (errors.Throttled, HTTPStatus.TOO_MANY_REQUESTS),
    (errors.DeadlineExceeded, HTTPStatus.GATEWAY_TIMEOUT),
)


def status_of(error: errors.DomainError) -> HTTPStatus:
    return next((s for t, s in _STATUS_BY_ERROR if isinstance(error, t)),
                HTTPStatus.INTERNAL_SERVER_ERROR)


def problem(status: HTTPStatus, reason: str, detail: str, instance: str = "",
            violations: list[errors.FieldViolation] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE + reason.lower().replace("_", "-"), "title": status.phrase,
        "status": status.value, "detail": detail, "reason": reason}
    if instance:
        body["instance"] = instance
    if violations:
        body["violations"] = [{"field": v.field, "description": v.description}
                              for v in violations]
    return JSONResponse(body, status.value, headers=headers, media_type=PROBLEM_JSON)


def problem_for(error: errors.DomainError, instance: str = "") -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(error, errors.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, errors.Throttled) and error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return problem(status_of(error), reason_for(error), error.message, instance,
                   error.violations if isinstance(error, errors.InvalidArgument) else None,
                   headers)


def internal_problem(instance: str = "") -> JSONResponse:
    return problem(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_REASON,
                   "internal error; the server log has the details", instance)
