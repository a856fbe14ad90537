"""Schemathesis against the running facade, loaded from the document it serves: generated
requests to every operation (stateless), none answered 5xx, every answer as documented
(status, content type, headers, body schema). Bounded examples keep it under a minute.
Answers random input rarely reaches (a change's quote on an active product, a hub
subscription read and deleted) are checked on explicit cases with the same checks."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation.case import Case

from idc.order.v1 import order_pb2
from services.common.config import KafkaSettings
from services.order.rest.hub import HUB_PATH
from services.order.rest.openapi import OPENAPI_PATH
from services.order.rest.sonata import QUOTE_PATH
from tests.integration.order.harness import activated
from tests.integration.order.rest_client import ORDERS, new_circuit, running_rest

pytestmark = pytest.mark.integration
EXAMPLES_PER_OPERATION = 25
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_headers_conformance,
          checks.response_schema_conformance]


def test_every_operation_holds_to_its_schema(sqlite_database_url: str,
                                             kafka_settings: KafkaSettings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Every example reaches its handler: none is answered 429 by the per-token rate limit.
    monkeypatch.setenv("IDC_RATE_CUSTOMER_PER_S", "100000")
    monkeypatch.setenv("IDC_RATE_CUSTOMER_BURST", "100000")
    with running_rest(sqlite_database_url, kafka_settings) as rest:
        # Something to find: a few orders (so lists have pages and products exist), one
        # product active (so a change can be quoted).
        for mbps in (10, 20, 50):
            assert rest.call("alice", "POST", ORDERS, body=new_circuit(mbps)).status_code == 201
        order = rest.svc.alice.create(100)
        rest.svc.approve_both(order)
        rest.svc.publish(activated(order), order.circuit_id)
        rest.svc.wait_state(order.id, order_pb2.ORDER_STATE_COMPLETED)
        schema = schemathesis.openapi.from_url(rest.url + OPENAPI_PATH)
        headers = {"Authorization": f"Bearer {rest.svc.alice.token}"}
        operations = {op.label: op for op in (r.ok() for r in schema.get_all_operations())}
        assert len(operations) == 11
        for label, operation in operations.items():
            statuses = _check(operation, rest.url, headers)
            print(f"schemathesis {label}: {statuses.total()} examples, statuses "
                  f"{dict(sorted(statuses.items()))}")

        def explicit(label: str, status: int, **case: Any) -> Any:
            answer = operations[label].Case(**case).call_and_validate(
                base_url=rest.url, headers=headers, checks=CHECKS)
            assert answer.status_code == status, answer.text
            return answer.json() if answer.content else None

        product = {"id": order.circuit_id, "productConfiguration": {
            "@type": "IdcCircuit", "bandwidthMbps": 200}}
        for action in ("modify", "delete"):
            explicit(f"POST {QUOTE_PATH}", 200, body={
                "timeZone": "Asia/Singapore",
                "quoteItem": [{"id": "1", "action": action, "product": product}]})
        hub = explicit(f"POST {HUB_PATH}", 201, body={
            "callback": "https://partner.example/idc",
            "query": "eventType=productStatusChangeEvent"})
        explicit(f"GET {HUB_PATH}/{{id}}", 200, path_parameters={"id": hub["id"]})
        explicit(f"DELETE {HUB_PATH}/{{id}}", 204, path_parameters={"id": hub["id"]})


def _check(operation: Any, base_url: str, headers: dict[str, str]) -> Counter[int]:
    """Runs the generated examples; the statuses they were answered with."""
    statuses: Counter[int] = Counter()

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Case) -> None:
        statuses[case.call_and_validate(base_url=base_url, headers=headers,
                                        checks=CHECKS).status_code] += 1

    check()
    return statuses
