"""Where an order call's time goes: ``python -m bench.profile_order [--calls N]``.

Starts the order service on a fresh PostgreSQL database as the bench does, drives
CreateOrder, GetOrder and ListOrders in turn at concurrency 16 and records each phase with
py-spy (every thread, GIL-holding samples only with ``--gil``), printing the top frames by
own time and keeping py-spy's raw stacks per method (``--out``). py-spy (a dev requirement)
reads the service's memory, so it needs ptrace rights on the process.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.load import Metadata, raw_caller, raw_method, run_closed_loop
from bench.order import CREATE, GET, LIST, TARGET_CONCURRENCY, create_requests
from bench.stack import KEYS, postgres_database, running_service
from devstack.kafka import start_broker
from idc.order.v1 import order_service_pb2
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata


def _py_spy(pid: int, out: Path, gil: bool, fmt: str) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", fmt,
               "--output", str(out), "--nonblocking"]
    if gil:
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def top_frames(raw: Path, count: int) -> list[tuple[float, str]]:
    """Own-time share of the leaf frames in py-spy's raw (collapsed stack) output."""
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(samples)
        total += int(samples)
    ranked = sorted(own.items(), key=lambda item: -item[1])[:count]
    return [(n / max(total, 1), leaf) for leaf, n in ranked]


def inclusive(raw: Path, needles: list[str]) -> dict[str, float]:
    """Share of samples whose stack contains each needle (a function name)."""
    hits = dict.fromkeys(needles, 0)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        total += int(samples)
        for needle in needles:
            if needle in stack:
                hits[needle] += int(samples)
    return {n: h / max(total, 1) for n, h in hits.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_order", description=__doc__)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "order-profile")
    parser.add_argument("--needle", action="append", default=[],
                        help="also print the inclusive share of this function")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="idc-profile-") as tmp, \
            start_broker(Path(tmp) / "kafka") as broker, postgres_database("order") as url:
        env = {"IDC_KAFKA_BOOTSTRAP": broker.bootstrap, "IDC_ORDER_DATABASE_URL": url}
        with running_service("order", Path(tmp), env) as service, \
                service.tls.channel(service.address) as channel:
            token = KEYS.mint(Principal("bench@acme", Role.CUSTOMER, tenant="acme"))
            metadata: Metadata = tuple(call_metadata(token))
            creates = create_requests(args.calls + 1)
            first = raw_method(channel, CREATE)(creates[0], metadata=metadata, timeout=30)
            order_id = order_service_pb2.CreateOrderResponse.FromString(first).order.id
            get = order_service_pb2.GetOrderRequest(order_id=order_id).SerializeToString()
            listing = order_service_pb2.ListOrdersRequest(page_size=20).SerializeToString()
            phases = [("CreateOrder", CREATE, creates[1:]), ("GetOrder", GET, [get]),
                      ("ListOrders", LIST, [listing])]
            for name, method, requests in phases:
                raw = args.out / f"{name}.txt"
                spy = _py_spy(service.proc.pid, raw, args.gil, "raw")
                figures = run_closed_loop(raw_caller(channel, method, requests, metadata),
                                          args.calls, TARGET_CONCURRENCY)
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(30)
                print(f"\n== {name}: {figures.throughput:,.0f} req/s, p50 {figures.p50_ms:.1f} "
                      f"ms, p99 {figures.p99_ms:.1f} ms (under the profiler)")
                for share, leaf in top_frames(raw, args.top):
                    print(f"  {share:6.1%}  {leaf}")
                for needle, share in inclusive(raw, args.needle).items():
                    print(f"  incl {share:6.1%}  {needle}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
