"""The committed OpenAPI document (openapi/partner.json) is the one the facade serves."""

from __future__ import annotations

import json

from services.order.rest.openapi import COMMITTED, document, rendered
from services.order.rest.resources import OPERATIONS


def test_the_committed_document_is_current() -> None:
    assert COMMITTED.read_text() == rendered(), (
        "openapi/partner.json is stale: run `make openapi` and commit it")


def test_every_operation_is_documented_once_with_its_problems() -> None:
    spec = document()
    documented = [(path, method, body["operationId"]) for path, methods in spec["paths"].items()
                  for method, body in methods.items()]
    assert sorted(documented) == sorted((op.path, op.method.lower(), op.operation_id)
                                        for op in OPERATIONS)
    assert len({op.operation_id for op in OPERATIONS}) == len(OPERATIONS)
    for methods in spec["paths"].values():
        for body in methods.values():
            assert "application/problem+json" in body["responses"]["default"]["content"]


def test_every_reference_resolves() -> None:
    text = json.dumps(document())
    schemas = document()["components"]["schemas"]
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
