"""The partner REST facade on the `make run` stack: a productOrder placed over HTTPS, both
telcos approve through the ops approval API (gRPC, idcctl), provisioning configures the
real (simulated) routers, the product turns active, and the routers read back carry it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx2

from devstack.run import RunningStack
from services.order.rest.sonata import ORDER_PATH, PRODUCT_PATH
from tests.integration.cli.conftest import Idcctl


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _json(outcome: Any) -> Any:
    assert outcome.code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def test_a_rest_order_is_approved_provisioned_and_on_both_routers(
        stack: RunningStack, idcctl: Idcctl) -> None:
    rest = httpx2.Client(base_url=stack.rest_url(), verify=str(stack.tls.ca_file), timeout=30,
                         headers={"Authorization": f"Bearer {stack.tokens['customer'].token}"})
    with rest:
        created = rest.post(ORDER_PATH, headers={"Idempotency-Key": uuid.uuid4().hex}, json={
            "productOrderItem": [{"id": "1", "action": "add", "product": {
                "productConfiguration": {
                    "@type": "IdcCircuit", "aEndPortId": "sg-edge-1:xe-0/0/2",
                    "zEndPortId": "cq-edge-1:XGE0/0/2", "bandwidthMbps": 20,
                    "termMonths": 12, "currencyCode": "SGD"}}}]})
        assert created.status_code == 201, created.text
        order = created.json()
        for ops in ("ops-sg", "ops-cq"):
            item = _wait(f"the order in {ops}'s queue", lambda ops=ops: next(
                (p for p in _json(idcctl("ops", "pending", "-o", "json", token=ops))
                 .get("pendingApprovals", [])
                 if p["order"]["id"] == order["id"] and p.get("payload", {}).get("sha256")),
                None))
            approved = idcctl("ops", "approve", order["id"], "--sha256",
                              item["payload"]["sha256"], token=ops)
            assert approved.code == 0, approved.stderr
        done = _wait("the order completed", lambda: (
            o if (o := rest.get(f"{ORDER_PATH}/{order['id']}").json())["state"] == "completed"
            else None))
        circuit_id = done["productOrderItem"][0]["product"]["id"]
        product = rest.get(f"{PRODUCT_PATH}/{circuit_id}").json()
        assert product["status"] == "active" and product["health"] == "inSync"

    configs = _json(idcctl("ops", "config", circuit_id, "-o", "json", token="ops-sg"))["configs"]
    assert {c["deviceName"] for c in configs} == {"sg-edge-1", "cq-edge-1"}
    for config in configs:
        assert config.get("inSync") is True, config
        assert str(product["productConfiguration"]["aEndVlanId"] if config["deviceName"]
                   .startswith("sg") else product["productConfiguration"]["zEndVlanId"]) \
            in config["runningConfig"]
