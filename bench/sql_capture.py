"""``python -m bench.sql_capture``: the SQL the order service sends for one CreateOrder,
GetOrder and ListOrders call, on PostgreSQL and on SQLite, written to bench/order_sql.json
for the composite floor (bench/sql_floor.py) to replay.

The service runs as the bench runs it, with bench/capture/ on its PYTHONPATH (a
sitecustomize hooking every SQLAlchemy engine); the statements of the gRPC threads between
the marks this driver writes are kept, in order, with their parameters, commits and
rollbacks. Run it again whenever the order path's SQL changes.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.load import Metadata, raw_method
from bench.order import CREATE, GET, LIST, create_requests
from bench.stack import KEYS, postgres_database, running_service
from devstack.kafka import start_broker
from idc.order.v1 import order_service_pb2
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata

CAPTURED = Path(__file__).parent / "order_sql.json"
HOOK_DIR = Path(__file__).parent / "capture"
# Long enough for the relay's and the health checks' statements of the call before to end.
SETTLE_S = 0.3


@contextmanager
def _database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'capture.db'}"
        return
    with postgres_database("capture") as url:
        yield url


def capture(backend: str, workdir: Path, bootstrap: str) -> dict[str, list[dict[str, Any]]]:
    log = workdir / f"{backend}.jsonl"
    with _database(backend, workdir) as url:
        env = {"IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_ORDER_DATABASE_URL": url,
               "PYTHONPATH": str(HOOK_DIR), "IDC_BENCH_SQL_CAPTURE": str(log)}
        with running_service("order", workdir, env, label=f"capture-{backend}") as service, \
                service.tls.channel(service.address) as channel:
            token = KEYS.mint(Principal("bench@acme", Role.CUSTOMER, tenant="acme"))
            metadata: Metadata = tuple(call_metadata(token))

            def mark(name: str) -> None:
                time.sleep(SETTLE_S)
                with log.open("a") as out:
                    out.write(json.dumps({"mark": name}) + "\n")

            def call(name: str, method: str, request: bytes) -> bytes:
                mark(name)
                reply: bytes = raw_method(channel, method)(request, metadata=metadata,
                                                           timeout=30)
                return reply

            # The second create is the one kept: the first warms the service's caches.
            creates = create_requests(2)
            call("warm-up", CREATE, creates[0])
            reply = call("CreateOrder", CREATE, creates[1])
            order_id = order_service_pb2.CreateOrderResponse.FromString(reply).order.id
            call("GetOrder", GET,
                 order_service_pb2.GetOrderRequest(order_id=order_id).SerializeToString())
            call("ListOrders", LIST,
                 order_service_pb2.ListOrdersRequest(page_size=20).SerializeToString())
            mark("end")
    return _by_mark(log)


def _by_mark(log: Path) -> dict[str, list[dict[str, Any]]]:
    calls: dict[str, list[dict[str, Any]]] = {}
    mark = None
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if "mark" in entry:
            mark = entry["mark"]
            continue
        # The gRPC pool's threads are named after the service (order_0, order_1, ...).
        if mark in ("CreateOrder", "GetOrder", "ListOrders") and \
                entry.pop("thread").startswith("order_"):
            calls.setdefault(mark, []).append(entry)
    return calls


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else CAPTURED
    with tempfile.TemporaryDirectory(prefix="idc-capture-") as tmp, \
            start_broker(Path(tmp) / "kafka") as broker:
        captured = {backend: capture(backend, Path(tmp), broker.bootstrap)
                    for backend in ("postgresql", "sqlite")}
    out.write_text(json.dumps(captured, indent=1) + "\n")
    for backend, calls in captured.items():
        print(backend, {name: len(ops) for name, ops in calls.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
