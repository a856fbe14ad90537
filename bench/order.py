"""Workload 1: the order API (CreateOrder, GetOrder, ListOrders) on PostgreSQL and SQLite at
several concurrencies, next to two floors answering replies of the same sizes to the same
request bytes: a grpcio server with empty handlers, and one whose handlers run the
product's own SQL for the call with the bare driver (bench/sql_floor.py, rows
"... vs gRPC+SQL")."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc

from bench.harness import Results, Row, at_least, at_most, interleaved, judged, memory_row
from bench.load import LoadFigures, Metadata, raw_caller, raw_method, run_closed_loop
from bench.stack import KEYS, postgres_database, running_service
from devstack.process import free_port, spawn, stop, wait_for_port
from devstack.services import REPO_ROOT
from idc.order.v1 import circuit_pb2, order_service_pb2
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata

SERVICE = "/idc.order.v1.OrderService/"
CREATE, GET, LIST = SERVICE + "CreateOrder", SERVICE + "GetOrder", SERVICE + "ListOrders"
# Shared 10 Gbps port pairs of the catalogue; 10 Mbps orders leave room for 3,000 orders.
PORT_PAIRS = [(f"sg-edge-1:xe-0/0/{n}", f"cq-edge-1:XGE0/0/{n}") for n in (1, 2, 3)]
TARGET_CONCURRENCY = 16


def create_requests(count: int) -> list[bytes]:
    requests = []
    for index in range(count):
        a_port, z_port = PORT_PAIRS[index % len(PORT_PAIRS)]
        spec = circuit_pb2.CircuitSpec(
            a_end_port_id=a_port, z_end_port_id=z_port, bandwidth_mbps=10, term_months=12,
            currency_code="SGD", customer_reference=f"BENCH-{index}",
            description="benchmark circuit",
        )
        request = order_service_pb2.CreateOrderRequest(request_id=uuid.uuid4().hex, spec=spec)
        requests.append(request.SerializeToString())
    return requests


@contextmanager
def empty_server(workdir: Path, replies: dict[str, int]) -> Iterator[str]:
    with _floor_server(workdir, "empty_server", [], replies) as address:
        yield address


@contextmanager
def sql_floor(workdir: Path, backend: str, url: str, replies: dict[str, int]
              ) -> Iterator[str]:
    """The composite floor (bench/sql_floor.py) on the product's own database."""
    with _floor_server(workdir, "sql_floor", [backend, url], replies) as address:
        yield address


@contextmanager
def _floor_server(workdir: Path, module: str, args: list[str], replies: dict[str, int]
                  ) -> Iterator[str]:
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", f"bench.{module}", str(port), *args,
         *(f"{path}={size}" for path, size in replies.items())],
        cwd=REPO_ROOT, log_path=workdir / f"{module}.log",
    )
    try:
        wait_for_port("127.0.0.1", port, 20.0, name=module, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


# Throughput targets at the target concurrency: against the empty handler, and against
# gRPC plus the product's own SQL (the composite floor; a create only).
SHARE_OF_EMPTY = {"CreateOrder": 0.25, "GetOrder": 0.60, "ListOrders": 0.60}
SHARE_OF_SQL = {"CreateOrder": 0.50}


def _rows(workload: str, method: str, concurrency: int, product: Sequence[LoadFigures],
          floor: Sequence[LoadFigures], sql: Sequence[LoadFigures], judge: bool) -> list[Row]:
    """The cell's rows from its rounds (one LoadFigures of each side per round)."""
    name = method.rsplit("/", 1)[-1]
    label = f"{workload} {name} c={concurrency}"

    def row(label: str, figure: str, unit: str, of: Callable[[LoadFigures], float],
            floors: Sequence[LoadFigures]) -> Row:
        return Row.rounds(label, figure, unit, [of(f) for f in product], [of(f) for f in floors])

    def rows(label: str, floors: Sequence[LoadFigures]) -> tuple[Row, Row, Row]:
        return (row(label, "throughput", "req/s", lambda f: f.throughput, floors),
                row(label, "p50", "ms", lambda f: f.p50_ms, floors),
                row(label, "p99", "ms", lambda f: f.p99_ms, floors))

    throughput, p50, p99 = rows(label, floor)
    sql_throughput, sql_p50, sql_p99 = rows(f"{label} vs gRPC+SQL", sql)
    if judge:
        share = SHARE_OF_EMPTY[name]
        judged(throughput, at_least(share), f">= {share:.0%} of floor")
        judged(p99, at_most(3.0), "<= 3x floor p99")
        judged(sql_p99, at_most(3.0), "<= 3x floor p99")
        if name in SHARE_OF_SQL:
            judged(sql_throughput, at_least(SHARE_OF_SQL[name]),
                   f">= {SHARE_OF_SQL[name]:.0%} of floor")
    return [throughput, p50, p99, sql_throughput, sql_p50, sql_p99]


Caller = Callable[[Sequence[bytes]], Callable[[int], None]]


def _measure(results: Results, workload: str, product: grpc.Channel, floor: grpc.Channel,
             sql: grpc.Channel, metadata: Metadata, method: str, requests: Sequence[bytes],
             concurrencies: Sequence[int], calls: int, rounds: int, judge: bool) -> None:
    for concurrency in concurrencies:
        chunk = list(requests[:calls])
        requests = requests[calls:]
        _cell(results, workload, method, concurrency, judge, [chunk] * rounds,
              lambda chunk: raw_caller(product, method, chunk, metadata),
              lambda chunk: raw_caller(floor, method, chunk, metadata),
              lambda chunk: raw_caller(sql, method, chunk, metadata))


def _cell(results: Results, workload: str, method: str, concurrency: int, judge: bool,
          chunks: Sequence[Sequence[bytes]], product: Caller, floor: Caller,
          sql: Caller) -> None:
    """One method at one concurrency, a round per chunk: the product, then both floors."""
    def run(caller: Caller, n: int) -> LoadFigures:
        return run_closed_loop(caller(chunks[n]), len(chunks[n]), concurrency)

    products, floors = interleaved(len(chunks), lambda n: run(product, n),
                                   lambda n: (run(floor, n), run(sql, n)))
    for row in _rows(workload, method, concurrency, products, [f for f, _ in floors],
                     [s for _, s in floors], judge and concurrency == TARGET_CONCURRENCY):
        results.add(row)


def run_backend(results: Results, workdir: Path, bootstrap: str, backend: str, url: str,
                concurrencies: Sequence[int], calls: int, rounds: int) -> None:
    workload = f"order {backend}"
    env = {"IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_ORDER_DATABASE_URL": url}
    with running_service("order", workdir, env, label=f"order-{backend}") as service:
        token = KEYS.mint(Principal("bench@acme", Role.CUSTOMER, tenant="acme"))
        metadata: Metadata = tuple(call_metadata(token))
        creates = create_requests(calls * len(concurrencies) * rounds + 1)
        with service.tls.channel(service.address) as product:
            call = raw_method(product, CREATE)
            first_reply = call(creates[0], metadata=metadata, timeout=30)
            order = order_service_pb2.CreateOrderResponse.FromString(first_reply).order
            get = order_service_pb2.GetOrderRequest(order_id=order.id).SerializeToString()
            get_reply = raw_method(product, GET)(
                get, metadata=metadata, timeout=30)
            listing = order_service_pb2.ListOrdersRequest(page_size=20).SerializeToString()
            sizes = {CREATE: len(first_reply), GET: len(get_reply)}
            _measure_all(results, (workload, backend, url), workdir, product, metadata,
                         creates[1:], listing, sizes, concurrencies, calls, rounds,
                         judge=backend == "postgresql")
        results.add(memory_row(workload, service))


def _measure_all(results: Results, where: tuple[str, str, str], workdir: Path,
                 product: grpc.Channel, metadata: Metadata, creates: list[bytes],
                 listing: bytes, sizes: dict[str, int], concurrencies: Sequence[int],
                 calls: int, rounds: int, judge: bool) -> None:
    workload, backend, url = where
    list_reply = raw_method(product, LIST)
    replies: list[bytes] = []

    def create_and_keep(chunk: Sequence[bytes]) -> Callable[[int], None]:
        method = raw_method(product, CREATE)

        def call(index: int) -> None:
            replies.append(method(chunk[index], metadata=metadata, timeout=60))

        return call

    floor_sizes = dict(sizes)
    with empty_server(workdir, {**floor_sizes, LIST: 1}) as create_floor_address, \
            grpc.insecure_channel(create_floor_address) as floor, \
            sql_floor(workdir, backend, url, {CREATE: sizes[CREATE]}) as sql_address, \
            grpc.insecure_channel(sql_address) as sql:
        for concurrency in concurrencies:
            # A fresh chunk of creates per round: a request id is placed once.
            chunks = [creates[n * calls:(n + 1) * calls] for n in range(rounds)]
            creates = creates[rounds * calls:]
            _cell(results, workload, CREATE, concurrency, judge, chunks, create_and_keep,
                  lambda chunk: raw_caller(floor, CREATE, chunk, metadata),
                  lambda chunk: raw_caller(sql, CREATE, chunk, metadata))
    # The list reply size is known once the creates are in: a full page.
    created = [order_service_pb2.CreateOrderResponse.FromString(r).order.id for r in replies]
    gets = [order_service_pb2.GetOrderRequest(order_id=order_id).SerializeToString()
            for order_id in created]
    floor_sizes[LIST] = len(list_reply(listing, metadata=metadata, timeout=30))
    with empty_server(workdir, floor_sizes) as floor_address, \
            grpc.insecure_channel(floor_address) as floor, \
            sql_floor(workdir, backend, url, {GET: sizes[GET], LIST: floor_sizes[LIST]}
                      ) as sql_address, grpc.insecure_channel(sql_address) as sql:
        _measure(results, workload, product, floor, sql, metadata, GET,
                 gets, concurrencies, calls, rounds, judge)
        _measure(results, workload, product, floor, sql, metadata, LIST,
                 [listing] * (calls * len(concurrencies)), concurrencies, calls, rounds, judge)


def run(results: Results, workdir: Path, bootstrap: str, concurrencies: Sequence[int],
        calls: int, rounds: int = 1) -> None:
    """``calls`` per method, concurrency and round; each round the product then its floors."""
    with postgres_database("order") as url:
        run_backend(results, workdir, bootstrap, "postgresql", url, concurrencies, calls, rounds)
    sqlite_url = f"sqlite:///{workdir / 'order-bench.db'}"
    run_backend(results, workdir, bootstrap, "sqlite", sqlite_url, concurrencies, calls, rounds)
