"""A small client of the partner REST facade for the tests: the order service of the
harness with its REST worker on port 0, and requests as each principal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2

from services.common.config import KafkaSettings
from services.order.rest.server import RestWorker
from services.order.rest.sonata import BASE
from tests.integration.order.harness import CQ_PORT, SG_PORT, OrderService, running_order_service

ORDERS = f"{BASE}/productOrderingManagement/v10/productOrder"


def configuration(bandwidth: int = 100, **fields: Any) -> dict[str, Any]:
    return {"@type": "IdcCircuit", "aEndPortId": SG_PORT, "zEndPortId": CQ_PORT,
            "bandwidthMbps": bandwidth, "termMonths": 12, "currencyCode": "SGD",
            "customerReference": "PO-1", **fields}


def new_circuit(bandwidth: int = 100, **fields: Any) -> dict[str, Any]:
    return {"productOrderItem": [{"id": "1", "action": "add", "product": {
        "productConfiguration": configuration(bandwidth, **fields)}}]}


def rest_url(svc: OrderService) -> str:
    worker = next(w for w in svc.app.workers if isinstance(w, RestWorker))
    return f"http://127.0.0.1:{worker.port}"


class Rest:
    def __init__(self, svc: OrderService) -> None:
        self.svc = svc
        self.url = rest_url(svc)
        self.http = httpx2.Client(base_url=self.url, timeout=30)

    def call(self, who: str | None, method: str, path: str, *,
             body: Any = None, headers: dict[str, str] | None = None,
             params: dict[str, Any] | None = None) -> httpx2.Response:
        sent = dict(headers or {})
        if who is not None:
            sent["Authorization"] = f"Bearer {self.svc.clients[who].token}"
        return self.http.request(method, path, json=body, headers=sent, params=params)


@contextmanager
def running_rest(database_url: str, kafka: KafkaSettings, **settings: Any) -> Iterator[Rest]:
    with running_order_service(database_url, kafka, rest_address="127.0.0.1:0",
                               **settings) as svc:
        rest = Rest(svc)
        try:
            yield rest
        finally:
            rest.http.close()
