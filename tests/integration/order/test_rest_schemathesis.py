"""Schemathesis against the running facade, loaded from the document it serves: generated
requests to every operation (stateless), none answered 5xx, every answer as documented
(status, content type, headers, body schema). Bounded examples keep it under a minute."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation.case import Case

from services.common.config import KafkaSettings
from services.order.rest.openapi import OPENAPI_PATH
from tests.integration.order.rest_client import ORDERS, new_circuit, running_rest

pytestmark = pytest.mark.integration
EXAMPLES_PER_OPERATION = 25
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_headers_conformance,
          checks.response_schema_conformance]


def test_every_operation_holds_to_its_schema(sqlite_database_url: str,
                                             kafka_settings: KafkaSettings) -> None:
    with running_rest(sqlite_database_url, kafka_settings) as rest:
        # Something to find: a few orders (so lists have pages and products exist).
        for mbps in (10, 20, 50):
            assert rest.call("alice", "POST", ORDERS, body=new_circuit(mbps)).status_code == 201
        schema = schemathesis.openapi.from_url(rest.url + OPENAPI_PATH)
        headers = {"Authorization": f"Bearer {rest.svc.alice.token}"}
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 8
        for operation in operations:
            _check(operation, rest.url, headers)


def _check(operation: Any, base_url: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Case) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

    check()
