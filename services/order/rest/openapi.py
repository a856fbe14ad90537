"""The OpenAPI 3.1 document of the facade, generated from its operation table and schemas;
committed as openapi/partner.json (`make openapi` writes it, a unit test fails when stale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.order.rest.operations import Operation
from services.order.rest.problems import PROBLEM_JSON
from services.order.rest.resources import OPERATIONS
from services.order.rest.schemas import COMPONENTS, array_of, ref

OPENAPI_PATH = "/openapi.json"
# The operations whose 201 answers the new resource's URL in Location.
LOCATED = {"createProductOrder": "the order's URL", "registerListener": "the subscription's URL"}
COMMITTED = Path(__file__).resolve().parents[3] / "openapi" / "partner.json"
DESCRIPTION = (
    "Partner API of the IDC bandwidth orchestrator over REST/JSON: a subset of MEF LSO "
    "Sonata (product offering qualification, quote, product order, product inventory, "
    "notification hub), "
    "one circuit per order. Authenticate with the same bearer tokens as the gRPC API. "
    "Errors are RFC 9457 problem details carrying the gRPC API's ErrorInfo reason and "
    "BadRequest field violations. Lists page by keyset: follow the Link header (rel=next).")


def _operation(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        schema = array_of(ref(op.response)) if op.is_list else ref(op.response)
        success["content"] = {"application/json": {"schema": schema}}
    if op.is_list:
        success["headers"] = {
            "Link": {"description": "RFC 8288 link to the next page (rel=next), if any",
                     "schema": {"type": "string"}},
            "X-Result-Count": {"description": "items on this page",
                               "schema": {"type": "integer"}}}
    if op.status == 201 and op.operation_id in LOCATED:
        success["headers"] = {"Location": {"description": LOCATED[op.operation_id],
                                           "schema": {"type": "string"}}}
    others = {str(status): {"description": meaning,
                            "content": {"application/json": {"schema": ref(component)}}}
              for status, (component, meaning) in op.also.items()}
    body: dict[str, Any] = {
        "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
        "responses": {
            str(op.status): success, **others,
            "default": {"description": "a problem (RFC 9457)",
                        "content": {PROBLEM_JSON: {"schema": ref("Problem")}}}}}
    if op.parameters:
        body["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required,
             "description": p.description, "schema": p.schema} for p in op.parameters]
    if op.request:
        media: dict[str, Any] = {"schema": ref(op.request)}
        if op.example is not None:
            media["example"] = op.example
        body["requestBody"] = {"required": True, "content": {"application/json": media}}
    return body


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "IDC partner API (MEF LSO Sonata subset)", "version": "1.0.0",
                 "description": DESCRIPTION},
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }


def rendered() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    COMMITTED.parent.mkdir(exist_ok=True)
    COMMITTED.write_text(rendered())
    print(f"wrote {COMMITTED}")
