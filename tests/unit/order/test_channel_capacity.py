"""The shipped catalogue against the 260 Gbps channel, and the burst rule of admission:
the channel binds before the ports, and only the committed bandwidth is counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from idc.order.v1 import circuit_pb2, order_service_pb2
from services.common.auth import Principal, Role
from services.common.errors import CapacityExhausted
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.capacity import Headroom, admit, shortfalls
from services.order.domain.catalogue import Side, load_catalogue
from services.order.domain.changes import ActiveCircuit, bandwidth_change
from services.order.domain.pricing import load_price_book
from services.order.orders import OrderApp
from services.order.settings import OrderSettings
from tests.unit.order.fakes import SqliteUnitOfWork

CATALOGUE = load_catalogue()
PRICES = load_price_book()
CHANNEL_MBPS = OrderSettings().channel_capacity_mbps


@pytest.mark.parametrize("side", list(Side))
def test_each_side_has_several_sites_and_more_port_capacity_than_the_channel(
        side: Side) -> None:
    sites = [site for site in CATALOGUE.sites.values() if site.side is side]
    speeds = [port.speed_mbps for site in sites for port in site.ports]
    assert len(sites) >= 2
    assert {100_000, 10_000} <= set(speeds)
    assert CHANNEL_MBPS == 260_000 < sum(speeds)


def test_the_channel_refuses_while_both_ports_still_have_room() -> None:
    a_port = CATALOGUE.ports["sg-edge-1:et-0/2/0"]
    z_port = CATALOGUE.ports["cq-edge-1:HGE1/0/3"]
    channel = Headroom("the channel", CHANNEL_MBPS, 255_000, 0)  # other ports carry that
    ends = [Headroom(f"port {p.id}", p.speed_mbps, 0, 0) for p in (a_port, z_port)]
    assert shortfalls(10_000, [channel, *ends]) == [
        "the channel has 5000 Mbps free of 260000 Mbps, 10000 Mbps asked"]
    with pytest.raises(CapacityExhausted, match="the channel has 5000 Mbps free"):
        admit(10_000, [channel, *ends])


def test_a_change_is_admitted_on_its_committed_increase_whatever_its_burst() -> None:
    circuit = ActiveCircuit(bandwidth_mbps=100, burst_mbps=0, term_months=12, currency="SGD")
    just_enough = [Headroom("the channel", 200, 100, 0)]
    change = bandwidth_change(circuit, 200, 5_000, [10_000, 10_000], just_enough, PRICES)
    assert (change.reserved_mbps, change.burst_mbps) == (100, 5_000)


def test_a_new_order_holds_its_committed_bandwidth_and_not_its_burst(tmp_path: Path) -> None:
    app = OrderApp(SqliteUnitOfWork(tmp_path), CATALOGUE, PRICES,
                   OrderSettings(channel_capacity_mbps=100),
                   contacts=ContactVault(ContactCipher(ContactKeySet.generate()),
                                         billing_telcos(CATALOGUE)))
    alice = Principal("alice@acme", Role.CUSTOMER, tenant="acme")
    order = app.placing.create_order(alice, order_service_pb2.CreateOrderRequest(
        request_id="bursty", spec=circuit_pb2.CircuitSpec(
            a_end_port_id="sg-edge-1:xe-0/0/1", z_end_port_id="cq-edge-1:XGE0/0/1",
            bandwidth_mbps=100, burst_mbps=1_000, term_months=12, currency_code="SGD")))
    assert (order.spec.bandwidth_mbps, order.spec.burst_mbps) == (100, 1_000)
