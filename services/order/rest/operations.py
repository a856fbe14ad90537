"""What an operation of the facade is: its path, its schemas and its handler. The one table
(services.order.rest.resources.OPERATIONS) the router and the OpenAPI document read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.order.orders import OrderApp
from services.order.rest.body import Body
from services.order.rest.schemas import Schema


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it; the principal is bound (services.common.auth)."""

    path: str
    path_params: dict[str, str]
    query: dict[str, str]
    body: Body | None = None
    idempotency_key: str = ""


@dataclass(frozen=True)
class Reply:
    body: dict[str, Any] | list[dict[str, Any]]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # "path", "query" or "header"
    schema: Schema
    description: str
    required: bool = False


Handler = Callable[[OrderApp, Call], Reply]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Handler
    response: str  # a component of services.order.rest.schemas
    status: int = 200
    request: str | None = None
    parameters: tuple[Parameter, ...] = ()
    is_list: bool = False
    # A request body the document shows (and schemathesis sends first).
    example: dict[str, Any] | None = None
    # Other success statuses: status -> (the component of its body, what it means).
    also: dict[int, tuple[str, str]] = field(default_factory=dict)
