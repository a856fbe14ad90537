"""The whole stack for the console's browser tests: the order and provisioning services and
the console as processes (`python -m services.<name>`), the devstack routers, a broker, and
the system Chromium driven by Playwright.

The broker is this module's own (from the same devstack code, or IDC_KAFKA_BOOTSTRAP when
set): the order service has no topic suffix, so on the session's broker its provisioning
peer here would replay every order event other tests left on the shared topics.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from PIL import Image, ImageStat
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from devstack.kafka import start_broker
from devstack.netconf import RouterFleet
from devstack.packages import ensure_debian_packages, missing_debian_packages
from devstack.process import DevstackError, free_port
from devstack.services import ServiceProcess, start_service, terminate_all, wait_serving
from idc.ops.v1 import approval_service_pb2 as approvals_pb
from idc.ops.v1 import approval_service_pb2_grpc as approvals_grpc
from idc.order.v1 import circuit_pb2, order_pb2
from idc.order.v1 import order_service_pb2 as orders_pb
from idc.order.v1 import order_service_pb2_grpc as orders_grpc
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from idc.provisioning.v1 import provisioning_service_pb2_grpc as prov_grpc
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata
from services.common.tokens import HarnessKeys
from services.provisioning.netconf import NetconfSession
from tests.integration.provisioning.helpers import device_of
from tests.integration.provisioning.stack import FAST

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
KEYS = HarnessKeys.generate()
SG_PORT, CQ_PORT = "sg-edge-1:xe-0/0/2", "cq-edge-1:XGE0/0/2"
SG_IF, CQ_IF = "xe-0/0/2", "XGE0/0/2"
# What customers wrote, with the quotes and signs the order service accepts (it refuses
# < > & in descriptions): shown verbatim, never interpreted.
HOSTILE_DESCRIPTION = "Acme \"primary\" link'); alert('x'); // \"onmouseover=alert(1)"
# The customer reference may be any printable text, markup included.
HOSTILE_REFERENCE = '<script>alert("ref")</script><b>PO-42</b>'
PEOPLE = {
    "olga": Principal("olga@sg", Role.OPS, telco="sg"),
    "chen": Principal("chen@cq", Role.OPS, telco="cq"),
    # Olga's colleague: approves Singapore's router of a repair Olga requested.
    "sue": Principal("sue@sg", Role.OPS, telco="sg"),
    "alice": Principal("alice@acme", Role.CUSTOMER, tenant="acme"),
    # The customer's own person holding an ops token too: four eyes must refuse her.
    "alice_ops": Principal("alice@acme", Role.OPS, telco="sg"),
}


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def assert_not_blank(png: bytes, path: Path) -> None:
    """The screenshot shows something: its pixels vary (a blank page has variance 0)."""
    path.write_bytes(png)
    image = Image.open(BytesIO(png)).convert("L")
    assert image.size[0] > 200 and image.size[1] > 200
    assert ImageStat.Stat(image).var[0] > 100, f"{path} looks blank"


@dataclass
class ConsoleStack:
    work: Path
    url: str
    order_address: str
    routers: RouterFleet
    tokens: dict[str, str]
    processes: list[ServiceProcess]
    vlans: Iterator[int] = field(default_factory=lambda: itertools.count(3900))
    used_vlans: list[int] = field(default_factory=list)
    _channel: grpc.Channel | None = None

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.order_address)
        return self._channel

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        return tuple(call_metadata(self.tokens[who]))

    def create_order(self, bandwidth: int = 100,
                     description: str = HOSTILE_DESCRIPTION) -> order_pb2.Order:
        vlan = next(self.vlans)
        self.used_vlans.append(vlan)
        spec = circuit_pb2.CircuitSpec(
            a_end_port_id=SG_PORT, z_end_port_id=CQ_PORT, a_end_vlan_id=vlan,
            z_end_vlan_id=vlan, bandwidth_mbps=bandwidth, term_months=12,
            currency_code="SGD", customer_reference=HOSTILE_REFERENCE, description=description)
        reply = orders_grpc.OrderServiceStub(self.channel).CreateOrder(
            orders_pb.CreateOrderRequest(request_id=uuid.uuid4().hex, spec=spec),
            metadata=self.md("alice"), timeout=30)
        order: order_pb2.Order = reply.order
        return order

    def planned_hash(self, who: str, order_id: str) -> str:
        """The payload hash the telco's ops are shown, once provisioning has planned it."""
        stub = approvals_grpc.ApprovalServiceStub(self.channel)

        def shown() -> str | None:
            reply = stub.ListPendingApprovals(approvals_pb.ListPendingApprovalsRequest(),
                                              metadata=self.md(who), timeout=30)
            for item in reply.pending_approvals:
                if item.order.id == order_id and item.payload.sha256:
                    return str(item.payload.sha256)
            return None

        return wait_for(f"the plan of {order_id} for {who}", shown)

    def approve(self, who: str, order_id: str) -> None:
        approvals_grpc.ApprovalServiceStub(self.channel).Approve(
            approvals_pb.ApproveRequest(order_id=order_id,
                                        payload_sha256=self.planned_hash(who, order_id)),
            metadata=self.md(who), timeout=30)

    def order(self, order_id: str) -> order_pb2.Order:
        order: order_pb2.Order = orders_grpc.OrderServiceStub(self.channel).GetOrder(
            orders_pb.GetOrderRequest(order_id=order_id), metadata=self.md("alice"),
            timeout=30).order
        return order

    def wait_order(self, order_id: str, state: order_pb2.OrderState.ValueType
                   ) -> order_pb2.Order:
        def reached() -> order_pb2.Order | None:
            order = self.order(order_id)
            return order if order.state == state else None

        return wait_for(f"order {order_id} in {order_pb2.OrderState.Name(state)}", reached)

    def approve_repairs(self, circuit_id: str) -> None:
        """Chongqing's ops and Olga's colleague approve the circuit's pending repair, each
        for their own router (the console requests; four eyes approve through the API)."""
        stub = prov_grpc.ProvisioningServiceStub(grpc.insecure_channel(self.processes[1].address))
        (repair,) = stub.ListRepairs(
            prov_pb.ListRepairsRequest(circuit_id=circuit_id, pending_only=True),
            metadata=self.md("chen")).repairs
        for who, telco in (("chen", "cq"), ("sue", "sg")):
            own = next(p for p in repair.payloads if p.telco_id == telco)
            stub.ApproveRepair(prov_pb.ApproveRepairRequest(
                repair_id=repair.repair_id, payload_sha256=own.sha256), metadata=self.md(who))

    @contextmanager
    def router(self, name: str) -> Iterator[NetconfSession]:
        """A NETCONF (ncclient) session straight to the router, past every service."""
        session = NetconfSession(device_of(self.routers[name]))
        try:
            yield session
        finally:
            session.close()


def _wait_http(process: ServiceProcess, url: str, timeout: float = 30.0) -> None:
    def answers() -> bool:
        if process.proc.poll() is not None:
            raise AssertionError(f"the console exited: {process.log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_for(f"{url} to answer", answers, timeout)


def _remove_subinterfaces(stack: ConsoleStack) -> None:
    """Take this module's circuits off the shared routers."""
    if not stack.used_vlans:
        return
    shapes = {
        "sg-edge-1": ('<interfaces xmlns="http://openconfig.net/yang/interfaces"><interface>'
                      f'<name>{SG_IF}</name><subinterfaces>{{subs}}</subinterfaces>'
                      '</interface></interfaces>',
                      '<subinterface nc:operation="remove"><index>{vlan}</index></subinterface>'),
        "cq-edge-1": ('<ifm xmlns="urn:idc:yang:cq-ifm"><interfaces><interface>'
                      f'<name>{CQ_IF}</name><sub-interfaces>{{subs}}</sub-interfaces>'
                      '</interface></interfaces></ifm>',
                      '<sub-interface nc:operation="remove"><number>{vlan}</number>'
                      '</sub-interface>'),
    }
    for name, (outer, inner) in shapes.items():
        subs = "".join(inner.format(vlan=v) for v in stack.used_vlans)
        with stack.router(name) as session:
            session.lock_candidate()
            try:
                session.discard()
                session.edit_candidate(
                    '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" '
                    'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0">'
                    + outer.format(subs=subs) + "</config>")
                session.commit()
            finally:
                session.unlock_candidate()


@pytest.fixture(scope="module")
def stack(routers: RouterFleet, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ConsoleStack]:
    work = tmp_path_factory.mktemp("console")
    devstack = work / "devstack.json"
    devstack.write_text(json.dumps({"routers": [
        {"name": r.name, "telco": r.telco, "platform": r.platform, "host": r.host,
         "port": r.port, "username": r.username, "key_path": str(r.key_path),
         "known_hosts_path": str(r.known_hosts_path)}
        for r in routers]}))
    tokens = {who: KEYS.mint(principal) for who, principal in PEOPLE.items()}
    processes: list[ServiceProcess] = []
    with start_broker(work) as broker:
        env = {
            **FAST,
            "IDC_KAFKA_BOOTSTRAP": broker.bootstrap,
            "IDC_VAR_DIR": str(work),
            **KEYS.env(),
            "IDC_ORDER_DATABASE_URL": f"sqlite:///{work / 'order.db'}",
            "IDC_PROVISIONING_DATABASE_URL": f"sqlite:///{work / 'provisioning.db'}",
            "IDC_PROVISIONING_INVENTORY": "devstack",
            "IDC_DEVSTACK_FILE": str(devstack),
            # Short WatchOrder streams: a live order page outlasts several, so the tests
            # show the console reopening them without losing a change.
            "IDC_STREAM_LIFETIME_S": "2",
        }
        try:
            for name in ("order", "provisioning"):
                processes.append(start_service(name, f"127.0.0.1:{free_port()}", env,
                                               work / f"{name}.log"))
            for process in processes:
                wait_serving(process)
            order, provisioning = processes
            listen = f"127.0.0.1:{free_port()}"
            console = start_service("console", listen, {
                **env, "IDC_ORDER_ADDRESS": order.address,
                "IDC_PROVISIONING_ADDRESS": provisioning.address}, work / "console.log")
            processes.append(console)
            _wait_http(console, f"http://{listen}/healthz")
            built = ConsoleStack(work, f"http://{listen}", order.address, routers, tokens,
                                 processes)
            yield built
            _remove_subinterfaces(built)
        finally:
            terminate_all(reversed(processes))


def pytest_collection_finish(session: pytest.Session) -> None:
    """On a machine without Chromium (a fresh clone: minutes of apt-get), its install
    starts in the background as the run starts, while the tests before the console's run;
    the ``playwright`` fixture then waits for it (the install's lock) and reports a failure
    itself, installing again."""
    here = Path(__file__).parent
    if (
        os.geteuid() == 0
        and any(Path(item.path).is_relative_to(here) for item in session.items)
        and missing_debian_packages({"chromium": CHROMIUM})
    ):
        threading.Thread(target=_install_chromium, name="chromium-install", daemon=True).start()


def _install_chromium() -> None:
    with contextlib.suppress(DevstackError):  # the fixture's own install says what failed
        ensure_debian_packages({"chromium": CHROMIUM})


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    ensure_debian_packages({"chromium": CHROMIUM})
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class Person:
    """One person's own browser context (own cookies), signed in to the console."""

    page: Page
    stack: ConsoleStack

    def goto(self, path: str) -> Any:
        return self.page.goto(self.stack.url + path)


@pytest.fixture
def sign_in(stack: ConsoleStack, browser: Browser) -> Iterator[Callable[[str], Person]]:
    contexts = []

    def open_as(who: str) -> Person:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto(stack.url + "/signin")
        page.fill("input[name=token]", stack.tokens[who])
        page.click("form[action='/signin'] button")
        return Person(page, stack)

    yield open_as
    for context in contexts:
        context.close()
