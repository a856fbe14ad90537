"""Several instances of each service on one machine, for the scale-out test: two order APIs
on one PostgreSQL database, two provisioning coordinators on one database and consumer
group, two agents per telco in their telco's consumer group, a broker and two routers of the
stack's own (so nothing another test left behind is on them, and the order service's
unsuffixed topics are nobody else's).

Each telco's two agents share one database (the telco's, as in production where the agent
runs in that telco's network): the command queue, the open confirmed-commit batches and the
router leases live there, so one agent drives each router and the agent that survives the
other takes its routers over and settles what the other left open.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from xml.etree import ElementTree as ET

import grpc
import psycopg

from devstack.kafka import start_broker
from devstack.netconf import RouterFleet, start_routers
from devstack.process import free_port
from devstack.services import ServiceProcess, start_service, terminate_all, wait_serving
from idc.ops.v1 import approval_service_pb2 as approvals_pb
from idc.ops.v1 import approval_service_pb2_grpc as approvals_grpc
from idc.order.v1 import circuit_pb2, order_pb2
from idc.order.v1 import order_service_pb2 as orders_pb
from idc.order.v1 import order_service_pb2_grpc as orders_grpc
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata
from services.common.tokens import HarnessKeys
from services.provisioning.domain.observe import CQ_IFM, OC_IF
from services.provisioning.netconf import NetconfSession
from tests.fixtures.database import postgres_databases
from tests.fixtures.netconf import ROUTER_SPECS
from tests.integration.provisioning.helpers import device_of
from tests.integration.provisioning.stack import FAST

T = TypeVar("T")
KEYS = HarnessKeys.generate()
# Ports of services/order/data/catalogue.toml, paired by position: three 10G pairs and
# one 1G pair.
SG_PORTS = ("sg-edge-1:xe-0/0/1", "sg-edge-1:xe-0/0/2", "sg-edge-1:xe-0/0/3",
            "sg-edge-1:ge-0/0/10")
CQ_PORTS = ("cq-edge-1:XGE0/0/1", "cq-edge-1:XGE0/0/2", "cq-edge-1:XGE0/0/3",
            "cq-edge-1:GE0/0/1")
PORT_SPEED_MBPS = {**dict.fromkeys(SG_PORTS[:3] + CQ_PORTS[:3], 10_000),
                   SG_PORTS[3]: 1_000, CQ_PORTS[3]: 1_000}
CUSTOMERS = {"acme": Principal("noc@acme", Role.CUSTOMER, tenant="acme"),
             "globex": Principal("noc@globex", Role.CUSTOMER, tenant="globex")}
OPS = {"sg": Principal("ops@sg", Role.OPS, telco="sg"),
       "cq": Principal("ops@cq", Role.OPS, telco="cq")}
FINAL = {order_pb2.ORDER_STATE_COMPLETED, order_pb2.ORDER_STATE_FAILED,
         order_pb2.ORDER_STATE_REJECTED, order_pb2.ORDER_STATE_CANCELLED}
AWAITING_APPROVAL = {order_pb2.ORDER_STATE_ACKNOWLEDGED, order_pb2.ORDER_STATE_PENDING_APPROVAL}
# Faster than the production defaults so a killed peer's work moves on within seconds.
PROVISIONING_TIMINGS = {
    "IDC_PROVISIONING_STEP_DEADLINE_S": "10",
    "IDC_PROVISIONING_CONFIRM_TIMEOUT_S": "30",
    "IDC_PROVISIONING_RETRY_BACKOFF_S": "1",
    "IDC_PROVISIONING_RETRY_WINDOW_S": "60",
    # A killed agent's routers pass to its peer within about five seconds, inside the step
    # deadline, so the sagas in flight need no new round.
    "IDC_PROVISIONING_LEASE_S": "4",
}


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Placed:
    """One CreateOrder call: the order, or the refusal (status and message)."""

    spec: circuit_pb2.CircuitSpec
    order: order_pb2.Order | None
    refusal: tuple[grpc.StatusCode, str] | None = None


@dataclass
class ScaleOutStack:
    work: Path
    routers: RouterFleet
    order_apis: list[ServiceProcess]
    processes: dict[str, ServiceProcess]
    tokens: dict[str, str]
    agent_databases: dict[str, str]
    # How each process is started: service name and environment (for a restart).
    launches: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    vlans: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    # -- plumbing -------------------------------------------------------------------------

    def channel(self, api: ServiceProcess) -> grpc.Channel:
        if api.address not in self._channels:
            # A killed process comes back within seconds: reconnect at that pace, not with
            # gRPC's default backoff of up to two minutes.
            self._channels[api.address] = grpc.insecure_channel(
                api.address, options=[("grpc.initial_reconnect_backoff_ms", 200),
                                      ("grpc.max_reconnect_backoff_ms", 1000)])
        return self._channels[api.address]

    def orders(self, api: ServiceProcess) -> orders_grpc.OrderServiceStub:
        return orders_grpc.OrderServiceStub(self.channel(api))

    def approvals(self, api: ServiceProcess) -> approvals_grpc.ApprovalServiceStub:
        return approvals_grpc.ApprovalServiceStub(self.channel(api))

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        return tuple(call_metadata(self.tokens[who]))

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful shutdown, no offset commit, no cleanup of any kind."""
        process = self.processes.pop(name)
        process.proc.send_signal(signal.SIGKILL)
        process.proc.wait(10)

    def restart(self, name: str, address: str) -> None:
        """Start a killed process again as it was, on its address, and wait until it
        serves."""
        service, env = self.launches[name]
        process = start_service(service, address, env, self.work / f"{name}.log")
        self.processes[name] = process
        self.order_apis[:] = [process if a.address == address else a for a in self.order_apis]
        wait_serving(process, timeout=90)

    def router_driver(self, telco: str, router: str) -> str:
        """The name of the agent process holding the router's lease (services/provisioning/
        lease.py; a holder is named host:pid:unique)."""
        with psycopg.connect(self.agent_databases[telco].replace("+psycopg", "")) as db:
            row = db.execute(
                "SELECT holder FROM router_leases WHERE router_name = %s", (router,)).fetchone()
        assert row is not None, f"no lease row for {router}"
        pid = int(str(row[0]).split(":")[-2])
        [name] = [n for n, p in self.processes.items() if p.proc.pid == pid]
        return name

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        terminate_all(self.processes.values())

    # -- orders ---------------------------------------------------------------------------

    def spec(self, pair: int, bandwidth_mbps: int) -> circuit_pb2.CircuitSpec:
        vlan = next(self.vlans)
        return circuit_pb2.CircuitSpec(
            a_end_port_id=SG_PORTS[pair], z_end_port_id=CQ_PORTS[pair], a_end_vlan_id=vlan,
            z_end_vlan_id=vlan, bandwidth_mbps=bandwidth_mbps, term_months=12,
            currency_code="SGD", customer_reference=f"scale-{vlan}",
            description=f"scale-out circuit {vlan}")

    def place_all(self, specs: list[circuit_pb2.CircuitSpec]) -> list[Placed]:
        """CreateOrder for every spec at once, alternating order APIs and customers."""
        customers = list(CUSTOMERS)

        def place(index: int) -> Placed:
            spec = specs[index]
            api = self.order_apis[index % len(self.order_apis)]
            who = customers[(index // 2) % len(customers)]
            try:
                reply = self.orders(api).CreateOrder(
                    orders_pb.CreateOrderRequest(request_id=uuid.uuid4().hex, spec=spec),
                    metadata=self.md(who), timeout=60)
            except grpc.RpcError as exc:
                return Placed(spec, None, (exc.code(), exc.details() or ""))
            return Placed(spec, reply.order)

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(place, range(len(specs))))

    def all_orders(self, ids: set[str]) -> dict[str, order_pb2.Order]:
        """The orders with these ids, read by staff through the first order API."""
        found: dict[str, order_pb2.Order] = {}
        token = ""
        while True:
            reply = self.orders(self.order_apis[0]).ListOrders(
                orders_pb.ListOrdersRequest(page_size=100, page_token=token),
                metadata=self.md("sg"), timeout=30)
            found.update((o.id, o) for o in reply.orders if o.id in ids)
            token = reply.next_page_token
            if not token:
                return found

    def approve_all(self, ids: set[str], timeout: float) -> None:
        """Both telcos approve each order's plan as shown (the payload hash of their side),
        through alternating order APIs, until none of them awaits approval any more."""
        decided: set[tuple[str, str]] = set()

        def approve_pending(telco: str, api: ServiceProcess) -> None:
            token = ""
            while True:
                reply = self.approvals(api).ListPendingApprovals(
                    approvals_pb.ListPendingApprovalsRequest(page_size=100, page_token=token),
                    metadata=self.md(telco), timeout=30)
                for item in reply.pending_approvals:
                    if item.order.id not in ids or not item.payload.sha256:
                        continue
                    try:
                        self.approvals(api).Approve(
                            approvals_pb.ApproveRequest(order_id=item.order.id,
                                                        payload_sha256=item.payload.sha256),
                            metadata=self.md(telco), timeout=30)
                    except grpc.RpcError as exc:
                        # A replan changed the payload since the list: shown again next round.
                        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                            raise
                    else:
                        decided.add((telco, item.order.id))
                token = reply.next_page_token
                if not token:
                    return

        def settled() -> bool:
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(approve_pending, ["sg", "cq"], self.order_apis))
            return not any(o.state in AWAITING_APPROVAL for o in self.all_orders(ids).values())

        wait_for("every order to leave approval", settled, timeout)

    def wait_final(self, ids: set[str], timeout: float) -> dict[str, order_pb2.Order]:
        """Every order in a final state; on the deadline, the ones still moving are named."""
        deadline = time.monotonic() + timeout
        while True:
            orders = self.all_orders(ids)
            moving = {i: order_pb2.OrderState.Name(o.state)
                      for i, o in orders.items() if o.state not in FINAL}
            if not moving and len(orders) == len(ids):
                return orders
            if time.monotonic() > deadline:
                raise AssertionError(f"orders stuck after {timeout:.0f} s: {moving}")
            time.sleep(0.5)

    # -- routers --------------------------------------------------------------------------

    def subinterfaces(self) -> dict[str, Counter[tuple[str, int, str]]]:
        """Per router, how often each (interface, vlan, circuit id) appears in running."""
        found: dict[str, Counter[tuple[str, int, str]]] = {}
        for router in self.routers:
            session = NetconfSession(device_of(router))
            try:
                running = session.running()
            finally:
                session.close()
            found[router.name] = count_subinterfaces(router.platform, running)
        return found


def count_subinterfaces(platform: str, running_xml: str) -> Counter[tuple[str, int, str]]:
    """Every sub-interface element of a get-config reply, duplicates counted (a dict keyed
    by sub-interface would hide them): (interface, vlan, first word of the description)."""
    root = ET.fromstring(running_xml.encode())
    if platform == "openconfig":
        ns = {"i": OC_IF}
        interfaces, subs, index, description = (
            ".//i:interfaces/i:interface", "i:subinterfaces/i:subinterface", "i:index",
            "i:config/i:description")
    else:
        ns = {"i": CQ_IFM}
        interfaces, subs, index, description = (
            ".//i:ifm/i:interfaces/i:interface", "i:sub-interfaces/i:sub-interface",
            "i:number", "i:description")
    counted: Counter[tuple[str, int, str]] = Counter()
    for interface in root.iterfind(interfaces, ns):
        name = interface.findtext("i:name", "", ns)
        for sub in interface.iterfind(subs, ns):
            words = (sub.findtext(description, "", ns) or "").split(" ", 1)
            counted[(name, int(sub.findtext(index, "0", ns)), words[0])] += 1
    return counted


@contextmanager
def scale_out_stack(work: Path, postgres_admin_url: str, channel_capacity_mbps: int,
                    instances: int = 2,
                    settings: dict[str, str] | None = None) -> Iterator[ScaleOutStack]:
    """Start everything (routers, broker, and ``instances`` order APIs, coordinators and
    agents per telco, with ``settings`` on top of the shared environment) and stop it
    again."""
    with ExitStack() as stack:
        routers = stack.enter_context(start_routers(ROUTER_SPECS, work / "routers"))
        broker = stack.enter_context(start_broker(work / "kafka"))
        databases = stack.enter_context(postgres_databases(
            postgres_admin_url, ["order", "coordinator", "agents_sg", "agents_cq"]))
        order_database_url = databases["order"]
        devstack = work / "devstack.json"
        devstack.write_text(json.dumps({"routers": [
            {"name": r.name, "telco": r.telco, "platform": r.platform, "host": r.host,
             "port": r.port, "username": r.username, "key_path": str(r.key_path),
             "known_hosts_path": str(r.known_hosts_path)} for r in routers]}))
        env = {
            **FAST,
            **PROVISIONING_TIMINGS,
            "IDC_KAFKA_BOOTSTRAP": broker.bootstrap,
            "IDC_VAR_DIR": str(work),
            **KEYS.env(),
            "IDC_ORDER_DATABASE_URL": order_database_url,
            "IDC_ORDER_CHANNEL_CAPACITY_MBPS": str(channel_capacity_mbps),
            "IDC_PROVISIONING_INVENTORY": "devstack",
            "IDC_DEVSTACK_FILE": str(devstack),
            **(settings or {}),
        }
        layout: dict[str, tuple[str, dict[str, str]]] = {
            f"order-{n}": ("order", {}) for n in range(1, instances + 1)}
        for n in range(1, instances + 1):
            layout[f"coordinator-{n}"] = ("provisioning", {
                "IDC_PROVISIONING_ROLE": "coordinator",
                "IDC_PROVISIONING_DATABASE_URL": databases["coordinator"]})
            for telco in ("sg", "cq"):
                layout[f"agent-{telco}-{n}"] = ("provisioning", {
                    "IDC_PROVISIONING_ROLE": "agent", "IDC_PROVISIONING_TELCO": telco,
                    "IDC_PROVISIONING_DATABASE_URL": databases[f"agents_{telco}"]})
        processes: dict[str, ServiceProcess] = {}
        tokens = {who: KEYS.mint(principal) for who, principal in {**CUSTOMERS, **OPS}.items()}
        result = ScaleOutStack(work, routers, [], processes, tokens,
                               {t: databases[f"agents_{t}"] for t in ("sg", "cq")})
        stack.callback(result.close)
        # The first instance on each database before the second: two instances migrating
        # one schema at the same moment is not what a deployment does (a migration Job runs
        # before the Deployments).
        for wave in range(1, instances + 1):
            started = [name for name in layout if name.endswith(f"-{wave}")]
            for name in started:
                service, own = layout[name]
                result.launches[name] = (service, {**env, **own})
                processes[name] = start_service(service, f"127.0.0.1:{free_port()}",
                                                {**env, **own}, work / f"{name}.log")
            for name in started:
                wait_serving(processes[name], timeout=90)
        result.order_apis.extend(processes[f"order-{n}"] for n in range(1, instances + 1))
        yield result
