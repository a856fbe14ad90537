"""Workload 2: provisioning, from OrderApproved on the order events topic to
CircuitActivated on the circuit events topic, through `python -m services.provisioning`
(coordinator and both agents) and the devstack's two routers.

Floor: raw ncclient on the same two routers, one circuit per transaction: on both routers
in parallel lock, edit-config, confirmed commit (persist), unlock; then the confirming
commit on both. Both are measured with no other circuits on the routers and with a
preload of circuits on another interface (a router's commit cost grows with its datastore),
in rounds: the product, then the floor, as many times as asked, each round its own ratio.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from bench.harness import (
    Results,
    Row,
    at_least,
    interleaved,
    judged,
    memory_row,
    nearest_rank,
)
from bench.stack import postgres_database, running_service
from devstack.netconf import Router, RouterFleet
from idc.events.v1 import circuit_pb2, common_pb2, order_pb2
from idc.type.v1 import money_pb2, side_pb2
from services.common.events import EventRegistry, decode_record, encode_event
from services.common.events.envelope import UnknownEventTypeError
from services.common.events.topics import CIRCUIT_EVENTS, ORDER_EVENTS
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.domain.merge import merge_configs
from services.provisioning.rendering import Renderer

# Interfaces: the product's circuits, the floor's, and the preload, kept apart.
PRODUCT_IF = {"sg": "xe-0/0/1", "cq": "GigabitEthernet0/0/1"}
FLOOR_IF = {"sg": "xe-0/0/3", "cq": "GigabitEthernet0/0/3"}
PRELOAD_IF = {"sg": "xe-0/0/2", "cq": "GigabitEthernet0/0/2"}
PLATFORM_OF_SIDE = {Side.SINGAPORE: "openconfig", Side.CHONGQING: "cq-vendor"}
ROUTER_OF_SIDE = {Side.SINGAPORE: "sg-edge-1", Side.CHONGQING: "cq-edge-1"}
FIRST_VLAN = 100
PRICE = common_pb2.PriceTerms(
    currency_code="SGD", mrc=money_pb2.Money(currency_code="SGD", amount="2565.00"),
    term_months=12,
)
OUTCOMES = EventRegistry([circuit_pb2.CircuitActivated, circuit_pb2.ProvisioningFailed])
SINGLE_TARGET_MS = 120.0
# Topics of its own: the order workload's OrderCreated events stay out of this one.
TOPIC_SUFFIX = ".bench"


def circuit(vlan: int, interfaces: dict[str, str]) -> common_pb2.CircuitParameters:
    def end(side: side_pb2.Side.ValueType, telco: str,
            router: str) -> common_pb2.CircuitEndpoint:
        return common_pb2.CircuitEndpoint(
            side=side, telco_id=telco, site_id=f"{telco}-site-1", router_name=router,
            port_id=f"{telco}-p1", interface_name=interfaces[telco], vlan_id=vlan,
        )

    return common_pb2.CircuitParameters(
        circuit_id=f"CKT-{uuid.uuid4().hex[:10]}", tenant_id="bench",
        a_end=end(side_pb2.SIDE_SINGAPORE, "sg", "sg-edge-1"),
        z_end=end(side_pb2.SIDE_CHONGQING, "cq", "cq-edge-1"),
        bandwidth_mbps=100, description="benchmark circuit",
    )


class Routers:
    """Raw ncclient sessions, one per router, for the floor, preloads and cleanup."""

    def __init__(self, fleet: RouterFleet) -> None:
        self.renderer = Renderer()
        self.managers = {side: fleet[name].connect() for side, name in ROUTER_OF_SIDE.items()}
        self.pool = ThreadPoolExecutor(max_workers=2)

    def close(self) -> None:
        self.pool.shutdown()
        for manager in self.managers.values():
            manager.close_session()

    def payload(self, side: Side, operation: Operation,
                params: common_pb2.CircuitParameters) -> str:
        end = circuit_end(params, side)
        return self.renderer.render(PLATFORM_OF_SIDE[side], operation, end).content

    def both(self, step: Callable[[Side, Any], None]) -> None:
        """``step(side, manager)`` on both routers at once."""
        for future in [self.pool.submit(step, side, m) for side, m in self.managers.items()]:
            future.result()

    def transaction(self, params: common_pb2.CircuitParameters) -> None:
        """One circuit, one transaction per router: prepare both, then confirm both."""
        persist = uuid.uuid4().hex

        def prepare(side: Side, manager: Any) -> None:
            manager.lock(target="candidate")
            try:
                manager.edit_config(target="candidate",
                                    config=self.payload(side, Operation.CREATE, params))
                manager.commit(confirmed=True, timeout="120", persist=persist)
            finally:
                manager.unlock(target="candidate")

        self.both(prepare)
        self.both(lambda side, manager: manager.commit(persist_id=persist))

    def apply(self, operation: Operation, circuits: Sequence[common_pb2.CircuitParameters]) -> None:
        """Many circuits in one edit and one plain commit per router (preload and cleanup,
        not timed): one edit per circuit costs a few hundred ms on a router holding 2,000."""
        def step(side: Side, manager: Any) -> None:
            config = merge_configs([self.payload(side, operation, p) for p in circuits])
            manager.lock(target="candidate")
            try:
                manager.edit_config(target="candidate", config=config)
                manager.commit()
            finally:
                manager.discard_changes()
                manager.unlock(target="candidate")

        if circuits:
            self.both(step)


def approvals(renderer: Renderer,
              params: common_pb2.CircuitParameters) -> list[order_pb2.ApprovedPayload]:
    return [
        order_pb2.ApprovedPayload(side=side.value, payload_sha256=renderer.render(
            platform, Operation.CREATE, circuit_end(params, side)).sha256)
        for side, platform in PLATFORM_OF_SIDE.items()
    ]


class Product:
    """Order events in, circuit events out, of a running provisioning service."""

    def __init__(self, bootstrap: str) -> None:
        self.renderer = Renderer()
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, fetch_max_wait_ms=10)
        partitions = self.consumer.partitions_for_topic(CIRCUIT_EVENTS + TOPIC_SUFFIX) or set()
        self.consumer.assign([TopicPartition(CIRCUIT_EVENTS + TOPIC_SUFFIX, p) for p in partitions])
        self.consumer.seek_to_end()

    def close(self) -> None:
        self.producer.close()
        self.consumer.close()

    def approve(self, params: common_pb2.CircuitParameters) -> str:
        """Publish an OrderApproved for ``params``; returns its event id."""
        event = order_pb2.OrderApproved(
            event_id=str(uuid.uuid4()), order_id=f"order-{uuid.uuid4().hex[:8]}",
            operation=Operation.CREATE.value, circuit=params,
            approvals=approvals(self.renderer, params), price=PRICE,
        )
        encoded = encode_event(event, params.circuit_id)
        self.producer.send(ORDER_EVENTS + TOPIC_SUFFIX, key=encoded.key, value=encoded.payload,
                           headers=encoded.headers)
        return event.event_id

    def wait_outcomes(self, circuit_ids: set[str], timeout: float) -> set[str]:
        """Wait for an outcome of every circuit; return those that failed."""
        waiting = set(circuit_ids)
        failed: set[str] = set()
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} circuit(s) without outcome in {timeout:.0f} s")
            for records in self.consumer.poll(timeout_ms=50).values():
                for record in records:
                    try:
                        event = decode_record(record, OUTCOMES)[0]
                    except UnknownEventTypeError:
                        continue  # e.g. ProvisioningPlanned
                    circuit_id = getattr(event, "circuit_id", "")
                    if circuit_id in waiting and isinstance(event,
                                                            circuit_pb2.ProvisioningFailed):
                        failed.add(circuit_id)
                    waiting.discard(circuit_id)
        return failed

    def approve_to_active_ms(self, params: common_pb2.CircuitParameters,
                             timeout: float) -> float | None:
        """One circuit approved alone: its approve-to-active time, None if it failed."""
        started = time.perf_counter()
        self.approve(params)
        self.producer.flush()
        if self.wait_outcomes({params.circuit_id}, timeout=timeout):
            return None
        return (time.perf_counter() - started) * 1000


def _vlans(start: int) -> Iterator[int]:
    yield from range(start, 4000)


def measure_floor(routers: Routers, runs: int, batch: int) -> tuple[list[float], float,
                                                                    list[common_pb2.CircuitParameters]]:
    vlans = _vlans(FIRST_VLAN)
    done = []
    latencies = []
    for _ in range(runs):
        params = circuit(next(vlans), FLOOR_IF)
        started = time.perf_counter()
        routers.transaction(params)
        latencies.append((time.perf_counter() - started) * 1000)
        done.append(params)
    many = [circuit(next(vlans), FLOOR_IF) for _ in range(batch)]
    started = time.perf_counter()
    for params in many:
        routers.transaction(params)
    rate = batch / (time.perf_counter() - started)
    return latencies, rate, done + many


@dataclass
class ProductFigures:
    latencies_ms: list[float]
    rate: float
    activated: list[common_pb2.CircuitParameters]
    failed: int


def measure_product(product: Product, runs: int, batch: int,
                    first_vlan: int = FIRST_VLAN) -> ProductFigures:
    """Single circuits one after another, then a batch at once; circuits/s counts the
    activated ones only. Each round its own VLANs: the service keeps its circuits."""
    vlans = _vlans(first_vlan)
    activated: list[common_pb2.CircuitParameters] = []
    latencies = []
    failed = 0
    for _ in range(runs):
        params = circuit(next(vlans), PRODUCT_IF)
        took = product.approve_to_active_ms(params, timeout=120)
        if took is None:
            failed += 1
            continue
        latencies.append(took)
        activated.append(params)
    many = [circuit(next(vlans), PRODUCT_IF) for _ in range(batch)]
    started = time.perf_counter()
    for params in many:
        product.approve(params)
    product.producer.flush()
    lost = product.wait_outcomes({p.circuit_id for p in many}, timeout=max(120.0, batch * 3.0))
    rate = (batch - len(lost)) / (time.perf_counter() - started)
    activated += [p for p in many if p.circuit_id not in lost]
    return ProductFigures(latencies, rate, activated, failed + len(lost))


@contextmanager
def provisioning_service(workdir: Path, bootstrap: str, fleet: RouterFleet,
                         url: str, extra_env: dict[str, str] | None = None) -> Iterator[Any]:
    devstack = workdir / "provisioning-devstack.json"
    devstack.write_text(json.dumps({"routers": [_router_entry(r) for r in fleet]}))
    env = {
        "IDC_KAFKA_BOOTSTRAP": bootstrap,
        "IDC_PROVISIONING_DATABASE_URL": url,
        "IDC_PROVISIONING_INVENTORY": "devstack",
        "IDC_DEVSTACK_FILE": str(devstack),
        "IDC_PROVISIONING_TOPIC_SUFFIX": TOPIC_SUFFIX,
        **(extra_env or {}),
    }
    with running_service("provisioning", workdir, env) as service:
        yield service


def _router_entry(router: Router) -> dict[str, Any]:
    return {
        "name": router.name, "telco": router.telco, "platform": router.platform,
        "host": router.host, "port": router.port, "username": router.username,
        "key_path": str(router.key_path), "known_hosts_path": str(router.known_hosts_path),
    }


def run(results: Results, workdir: Path, bootstrap: str, fleet: RouterFleet,
        plan: Sequence[tuple[int, int, int]], rounds: int = 1) -> None:
    """``plan``: (circuits preloaded on the routers, single-circuit runs, batch size), each
    phase measured ``rounds`` times."""
    routers = Routers(fleet)
    try:
        with postgres_database("provisioning") as url, \
                provisioning_service(workdir, bootstrap, fleet, url) as service:
            product = Product(bootstrap)
            try:
                # One circuit first, untimed: sessions to the routers open on first use.
                warm = circuit(3999, PRODUCT_IF)
                product.approve(warm)
                product.producer.flush()
                if product.wait_outcomes({warm.circuit_id}, timeout=120):
                    raise RuntimeError("the first circuit failed: see provisioning.log")
                routers.apply(Operation.DELETE, [warm])
                for preload, runs, batch in plan:
                    _phase(results, routers, product, runs, batch, preload, rounds)
            finally:
                product.close()
            results.add(memory_row("provisioning", service))
    finally:
        routers.close()


def _phase(results: Results, routers: Routers, product: Product, runs: int, batch: int,
           preload: int, rounds: int) -> None:
    vlans = _vlans(FIRST_VLAN)
    preloaded = [circuit(next(vlans), PRELOAD_IF) for _ in range(preload)]
    routers.apply(Operation.CREATE, preloaded)

    def product_round(n: int) -> ProductFigures:
        figures = measure_product(product, runs, batch, FIRST_VLAN + n * (runs + batch))
        routers.apply(Operation.DELETE, figures.activated)
        return figures

    def floor_round(_n: int) -> tuple[list[float], float]:
        latencies, rate, done = measure_floor(routers, runs, batch)
        routers.apply(Operation.DELETE, done)
        return latencies, rate

    try:
        products, floors = interleaved(rounds, product_round, floor_round)
    finally:
        routers.apply(Operation.DELETE, preloaded)
    label = f"provisioning, {preload} on routers"
    singles = f"{label}, 1 circuit x{runs}"
    p50 = Row.rounds(singles, "approve-to-active p50", "ms",
                     [nearest_rank(f.latencies_ms, 50) for f in products],
                     [nearest_rank(latencies, 50) for latencies, _ in floors])
    if preload == 0:
        judged(p50, lambda value, _floor: value <= SINGLE_TARGET_MS,
               f"<= {SINGLE_TARGET_MS:.0f} ms")
    results.add(p50)
    results.add(Row.rounds(singles, "approve-to-active p99", "ms",
                           [nearest_rank(f.latencies_ms, 99) for f in products],
                           [nearest_rank(latencies, 99) for latencies, _ in floors]))
    results.add(judged(
        Row.rounds(f"{label}, {batch} at once", "throughput", "circuits/s",
                   [f.rate for f in products], [rate for _, rate in floors]),
        at_least(1.0), ">= floor (1 per transaction)",
    ))
    failed = sum(f.failed for f in products)
    results.add(Row(f"{label}, all circuits", "ProvisioningFailed", "circuits",
                    failed, target="0", met=failed == 0))
