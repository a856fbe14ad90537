"""Sandbox tenants (README "Sandbox"): they order only sandbox sites, a real tenant never
one, and sandbox circuits are admitted into a pool of their own, never the channel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import order_pb2 as order_events
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common.auth import Principal, Role
from services.common.errors import CapacityExhausted, InvalidArgument
from services.common.events.tables import OutboxRow
from services.order import convert
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.catalogue import CatalogueError, load_catalogue, parse_catalogue
from services.order.domain.pricing import load_price_book
from services.order.orders import OrderApp
from services.order.settings import OrderSettings
from services.order.tables import CircuitRow
from tests.unit.order.fakes import SqliteUnitOfWork, record_plan

CATALOGUE = load_catalogue()
PRICES = load_price_book()
SANDBOX_A, SANDBOX_Z = "sg-sandbox-edge:xe-0/0/1", "cq-sandbox-edge:XGE0/0/1"
REAL_A, REAL_Z = "sg-edge-1:xe-0/0/1", "cq-edge-1:XGE0/0/1"
TRYING = Principal("tess@sandbox", Role.CUSTOMER, tenant="sandbox-demo")
ALICE = Principal("alice@acme", Role.CUSTOMER, tenant="acme")
OLGA = Principal("olga@sg", Role.OPS, telco="sg")
CHEN = Principal("chen@cq", Role.OPS, telco="cq")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[OrderApp]:
    uow = SqliteUnitOfWork(tmp_path)
    yield OrderApp(uow, CATALOGUE, PRICES, OrderSettings(channel_capacity_mbps=1_000),
                   contacts=ContactVault(ContactCipher(ContactKeySet.generate()),
                                         billing_telcos(CATALOGUE)))
    uow.close()


def order(app: OrderApp, who: Principal, a_port: str, z_port: str, mbps: int,
          request_id: str) -> Any:
    return app.placing.create_order(who, order_service_pb2.CreateOrderRequest(
        request_id=request_id, spec=circuit_pb2.CircuitSpec(
            a_end_port_id=a_port, z_end_port_id=z_port, bandwidth_mbps=mbps,
            term_months=12, currency_code="SGD")))


def test_the_shipped_catalogue_has_a_sandbox_site_per_side_on_routers_of_their_own() -> None:
    sandbox = [site for site in CATALOGUE.sites.values() if site.sandbox]
    assert {site.router for site in sandbox} == {"sg-sandbox-edge", "cq-sandbox-edge"}
    assert CATALOGUE.is_sandbox_tenant("sandbox-demo")
    assert not CATALOGUE.is_sandbox_tenant("acme") and not CATALOGUE.is_sandbox_tenant(None)
    assert CATALOGUE.sandbox_capacity_mbps == 20_000


def test_listings_offer_each_tenant_its_own_kind_of_site_and_staff_all() -> None:
    def offered(tenant: str | None) -> set[str]:
        return {s.id for s in CATALOGUE.sites.values() if CATALOGUE.offered_to(s, tenant)}

    assert offered("sandbox-demo") == {"sg-sandbox", "cq-sandbox"}
    assert offered("acme") == set(CATALOGUE.sites) - {"sg-sandbox", "cq-sandbox"}
    assert offered(None) == set(CATALOGUE.sites)


def catalogue(router: str, capacity: int) -> dict[str, Any]:
    def site(name: str, side: str, telco: str, router: str, **extra: Any) -> dict[str, Any]:
        return {"id": name, "name": name, "side": side, "telco": telco, "city": "c",
                "router": router, "platform": "openconfig", **extra,
                "ports": [{"name": f"xe-0/0/{len(name)}", "speed_mbps": 1000, "vlan_first": 100,
                           "vlan_last": 200}]}

    return {
        "telcos": [{"id": "sg", "name": "S", "side": "SINGAPORE"},
                   {"id": "cq", "name": "C", "side": "CHONGQING"}],
        "sites": [site("real", "SINGAPORE", "sg", "sg-edge-1"),
                  site("try", "CHONGQING", "cq", router, sandbox=True)],
        "sandbox": {"tenants": ["t"], "capacity_mbps": capacity},
    }


@pytest.mark.parametrize(("data", "message"), [
    (catalogue("sg-edge-1", 100), "site try: a sandbox site needs a router of its own"),
    (catalogue("cq-sandbox-edge", 0), "sandbox.capacity_mbps"),
])
def test_a_sandbox_site_on_a_real_router_or_without_a_pool_is_refused(
        data: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(data)


@pytest.mark.parametrize(("who", "a_port", "z_port", "field", "says"), [
    (TRYING, REAL_A, SANDBOX_Z, "spec.a_end_port_id", "is not a sandbox port"),
    (TRYING, SANDBOX_A, REAL_Z, "spec.z_end_port_id", "is not a sandbox port"),
    (ALICE, SANDBOX_A, REAL_Z, "spec.a_end_port_id", "is a sandbox port"),
])
def test_each_kind_of_tenant_orders_only_its_own_kind_of_site(
        app: OrderApp, who: Principal, a_port: str, z_port: str, field: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        order(app, who, a_port, z_port, 100, "wrong-kind")
    assert [(v.field, says in v.description) for v in refused.value.violations] == [
        (field, True)]
    with app.uow.read() as session:
        assert session.query(CircuitRow).count() == 0


def test_sandbox_circuits_use_the_sandbox_pool_and_never_the_channel(app: OrderApp) -> None:
    # The real channel is 1,000 Mbps here: the sandbox orders would overshoot it.
    placed = order(app, TRYING, SANDBOX_A, SANDBOX_Z, 1_000, "try-1")
    order(app, TRYING, SANDBOX_A, SANDBOX_Z, 1_000, "try-2")
    figures = app.capacity()
    assert (figures.channel.reserved_mbps, figures.channels.sandbox.reserved_mbps) == (0, 2_000)
    assert figures.channels.sandbox.capacity_mbps == 20_000
    order(app, ALICE, REAL_A, REAL_Z, 1_000, "real-1")
    with pytest.raises(CapacityExhausted, match="the channel has 0 Mbps free"):
        order(app, ALICE, "sg-edge-1:xe-0/0/2", "cq-edge-1:XGE0/0/2", 100, "real-2")
    assert app.capacity().channels.sandbox.free_mbps == 18_000
    with app.uow.read() as session:
        circuit = session.get(CircuitRow, placed.circuit_id)
        assert circuit is not None
        assert convert.circuit(CATALOGUE, circuit).sandbox
        assert convert.circuit_parameters(CATALOGUE, circuit, circuit.id, 1_000, 0).sandbox


def test_the_sandbox_pool_refuses_what_it_cannot_hold(app: OrderApp) -> None:
    order(app, TRYING, SANDBOX_A, SANDBOX_Z, 10_000, "big-1")
    order(app, TRYING, "sg-sandbox-edge:ge-0/0/1", "cq-sandbox-edge:GE0/0/1", 1_000, "one")
    with pytest.raises(CapacityExhausted, match="the sandbox pool has 9000 Mbps free"):
        order(app, TRYING, SANDBOX_A, SANDBOX_Z, 10_000, "big-2")


def test_real_circuits_are_not_sandbox_ones(app: OrderApp) -> None:
    placed = order(app, ALICE, REAL_A, REAL_Z, 100, "real")
    with app.uow.read() as session:
        circuit = session.get(CircuitRow, placed.circuit_id)
        assert circuit is not None
        assert not convert.circuit(CATALOGUE, circuit).sandbox


def active_sandbox_circuit(app: OrderApp) -> str:
    """A sandbox circuit of 1,000 Mbps, approved by both telcos and ACTIVE."""
    placed = order(app, TRYING, SANDBOX_A, SANDBOX_Z, 1_000, "try-active")
    record_plan(app, placed.id, placed.circuit_id)
    app.approving.approve(OLGA, placed.id, "a1", "")
    app.approving.approve(CHEN, placed.id, "z1", "")
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitActivated(
            order_id=placed.id, circuit_id=placed.circuit_id))
    return str(placed.circuit_id)


def test_a_sandbox_boost_is_booked_in_the_sandbox_pool_and_its_timeline(
        app: OrderApp) -> None:
    circuit_id = active_sandbox_circuit(app)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    request = order_service_pb2.ModifyBandwidthRequest(
        request_id="try-boost", circuit_id=circuit_id, bandwidth_mbps=5_000)
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(start + timedelta(hours=2))
    # 4,000 Mbps more than the real channel's whole 1,000 here: only the pool holds it.
    booked = app.changing.modify_bandwidth(TRYING, request)
    assert booked.state == order_pb2.ORDER_STATE_PENDING_APPROVAL
    during = start + timedelta(minutes=30)
    [pool] = [i for i in app.capacity_timeline([SANDBOX_A], None, start + timedelta(hours=4),
                                               sandbox=True) if i.start <= during < i.end]
    assert (pool.channel_free_mbps, pool.port_free_mbps[SANDBOX_A]) == (15_000, 5_000)
    [real] = app.capacity_timeline([REAL_A], None, start + timedelta(hours=4), sandbox=False)
    assert real.channel_free_mbps == 1_000, "the real channel never sees the sandbox boost"


def test_a_sandbox_order_is_approved_by_both_telcos_and_changes_within_its_pool(
        app: OrderApp) -> None:
    placed = order(app, TRYING, SANDBOX_A, SANDBOX_Z, 1_000, "try-life")
    record_plan(app, placed.id, placed.circuit_id)
    # No automatic approval: it waits for both telcos' ops like any order.
    assert app.approving.approve(OLGA, placed.id, "a1", "").state \
        == order_pb2.ORDER_STATE_PENDING_APPROVAL
    assert app.approving.approve(CHEN, placed.id, "z1", "").state \
        == order_pb2.ORDER_STATE_APPROVED
    with app.uow.read() as session:
        [approved] = [order_events.OrderApproved.FromString(row.payload) for row in
                      session.scalars(select(OutboxRow).where(
                          OutboxRow.event_type == "idc.events.v1.OrderApproved"))]
    assert approved.circuit.sandbox and approved.circuit.a_end.router_name == "sg-sandbox-edge"
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitActivated(
            order_id=placed.id, circuit_id=placed.circuit_id))
    # 4,000 Mbps more than the real channel's 1,000 here: the sandbox pool takes it.
    change = app.changing.modify_bandwidth(TRYING, order_service_pb2.ModifyBandwidthRequest(
        request_id="try-more", circuit_id=placed.circuit_id, bandwidth_mbps=5_000))
    assert change.state == order_pb2.ORDER_STATE_PENDING_APPROVAL
    figures = app.capacity()
    assert (figures.channel.committed_mbps, figures.channel.reserved_mbps) == (0, 0)
    assert (figures.channels.sandbox.committed_mbps,
            figures.channels.sandbox.reserved_mbps) == (1_000, 4_000)
