"""What an operation of the facade is: its path, its schemas and its handler. The one table
(services.order.rest.resources.OPERATIONS) the router and the OpenAPI document read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.order.orders import OrderApp
from services.order.rest.body import Body
from services.order.rest.schemas import Schema
from services.order.webhooks.subscriptions import Webhooks


@dataclass(frozen=True)
class Backend:
    """The use cases the handlers call: the order service's and its webhooks'."""

    orders: OrderApp
    webhooks: Webhooks


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
    body: dict[str, Any] | list[dict[str, Any]] | None  # None: no content (204)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # "path", "query" or "header"
    schema: Schema
    description: str
    required: bool = False


Handler = Callable[[Backend, Call], Reply]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Handler
    response: str | None  # a component of services.order.rest.schemas; None: no content
    status: int = 200
    request: str | None = None
    parameters: tuple[Parameter, ...] = ()
    is_list: bool = False
    # A request body the document shows (and schemathesis sends first).
    example: dict[str, Any] | None = None
    # Other success statuses: status -> (the component of its body, what it means).
    also: dict[int, tuple[str, str]] = field(default_factory=dict)
