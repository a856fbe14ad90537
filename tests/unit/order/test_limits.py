"""One limit per field for both services: whatever the order service accepts, provisioning
renders, and the limits themselves fit the routers' YANG models."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import InvalidArgument
from services.common.limits import (
    MAX_BANDWIDTH_MBPS,
    MAX_BURST_MBPS,
    MAX_DESCRIPTION,
    MAX_ID_LENGTH,
    MAX_VLAN,
    MIN_VLAN,
    identifier_description,
    is_id,
    is_interface,
)
from services.order import convert
from services.order.domain.catalogue import CatalogueError, load_catalogue, parse_catalogue
from services.order.domain.pricing import PriceBookError, load_price_book, parse_price_book
from services.order.domain.validation import (
    CircuitRequest,
    validate_bandwidth_change,
    validate_circuit_request,
)
from services.order.requests import new_id
from services.order.tables import OrderRow
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.rendering import TEMPLATES_ROOT, Renderer

CATALOGUE = load_catalogue()
PRICES = load_price_book()
YANG = TEMPLATES_ROOT
PLATFORM_OF_SIDE = {Side.SINGAPORE: "openconfig", Side.CHONGQING: "cq-vendor"}
REQUEST = CircuitRequest(
    a_end_port_id="sg-edge-1:xe-0/0/1", z_end_port_id="cq-edge-1:XGE0/0/1",
    a_end_vlan_id=None, z_end_vlan_id=None, bandwidth_mbps=100, burst_mbps=0,
    term_months=12, currency="SGD", customer_reference="PO-1", description="acme link",
)


def refused(request: CircuitRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as error:
        validate_circuit_request(request, CATALOGUE, PRICES, "acme")
    return {v.field: v.description for v in error.value.violations}


def rendered(request: CircuitRequest, a_vlan: int, z_vlan: int) -> list[str]:
    """Both routers' CREATE payloads for an accepted request, as provisioning renders
    them from what the order service would publish."""
    row = OrderRow(tenant_id="acme", a_port_id=request.a_end_port_id,
                   z_port_id=request.z_end_port_id, a_vlan=a_vlan, z_vlan=z_vlan,
                   description=request.description)
    params = convert.circuit_parameters(CATALOGUE, row, new_id("cct"), request.bandwidth_mbps,
                                        request.burst_mbps)
    renderer = Renderer()
    return [renderer.render(platform, Operation.CREATE, circuit_end(params, side)).content
            for side, platform in PLATFORM_OF_SIDE.items()]


def test_a_description_of_the_limit_is_accepted_and_stays_off_both_routers() -> None:
    """The customer's description stays in the order database; both routers get the
    circuit id and the description built from ids."""
    # "z": never in the random hex of the circuit id the payloads carry ("d" could be).
    request = replace(REQUEST, description="z" * MAX_DESCRIPTION)
    validate_circuit_request(request, CATALOGUE, PRICES, "acme")
    payloads = rendered(request, 100, 100)
    assert not any("zzz" in payload for payload in payloads)
    assert all(re.search(r"cct-[0-9a-f]+ IDC acme<", payload) for payload in payloads)


def test_the_identifier_description_of_the_longest_tenant_id_renders() -> None:
    tenant = "t" * MAX_ID_LENGTH
    assert len(identifier_description(tenant)) <= MAX_DESCRIPTION
    row = OrderRow(tenant_id=tenant, a_port_id=REQUEST.a_end_port_id,
                   z_port_id=REQUEST.z_end_port_id, a_vlan=100, z_vlan=100,
                   description="whatever the customer wrote")
    params = convert.circuit_parameters(CATALOGUE, row, "c" * MAX_ID_LENGTH, 100, 0)
    assert params.description == f"IDC {tenant}"
    for side, platform in PLATFORM_OF_SIDE.items():
        content = Renderer().render(platform, Operation.CREATE, circuit_end(params, side)).content
        assert f"{'c' * MAX_ID_LENGTH} IDC {tenant}" in content


def test_one_character_more_is_refused_at_the_order_naming_the_field() -> None:
    problems = refused(replace(REQUEST, description="d" * (MAX_DESCRIPTION + 1)))
    assert problems == {
        "spec.description": f"is {MAX_DESCRIPTION + 1} characters long; at most "
                            f"{MAX_DESCRIPTION} are allowed"}
    # ... and provisioning refuses such a description too: the limit is one.
    row = OrderRow(tenant_id="acme", a_port_id=REQUEST.a_end_port_id,
                   z_port_id=REQUEST.z_end_port_id, a_vlan=100, z_vlan=100)
    params = convert.circuit_parameters(CATALOGUE, row, new_id("cct"), 100, 0)
    params.description = "d" * (MAX_DESCRIPTION + 1)
    with pytest.raises(InvalidArgument, match=r"circuit\.description"):
        circuit_end(params, Side.SINGAPORE)


def test_a_burst_beyond_the_routers_rate_limits_is_refused() -> None:
    problems = refused(replace(REQUEST, burst_mbps=MAX_BURST_MBPS + 1))
    assert "at most 400000 Mbps" in problems["spec.burst_mbps"]
    with pytest.raises(InvalidArgument) as error:
        validate_bandwidth_change(100, 200, MAX_BURST_MBPS + 1, [10_000, 10_000], PRICES)
    assert [v.field for v in error.value.violations] == ["burst_mbps"]


def test_every_port_pair_of_the_catalogue_renders_at_its_extremes() -> None:
    """The largest offered bandwidth that fits, the largest burst, a full description and
    the first and last VLAN of every port: accepted, then rendered by both platforms."""
    sg = [p for p in CATALOGUE.ports.values() if p.id.startswith("sg-")]
    cq = [p for p in CATALOGUE.ports.values() if p.id.startswith("cq-")]
    for a_port in sg:
        sandbox = CATALOGUE.is_sandbox_port(a_port.id)
        for z_port in (p for p in cq if CATALOGUE.is_sandbox_port(p.id) == sandbox):
            speed = min(a_port.speed_mbps, z_port.speed_mbps)
            bandwidth = max(s for s in PRICES.bandwidth_steps_mbps if s <= speed)
            request = replace(REQUEST, a_end_port_id=a_port.id, z_end_port_id=z_port.id,
                              bandwidth_mbps=bandwidth, burst_mbps=speed - bandwidth,
                              description="~" * MAX_DESCRIPTION)
            validate_circuit_request(request, CATALOGUE, PRICES,
                                     "sandbox-demo" if sandbox else "acme")
            rendered(request, a_port.vlan_first, z_port.vlan_last)
            rendered(request, a_port.vlan_last, z_port.vlan_first)


def catalogue_data(router: str = "sg-edge-1", port: str = "xe-0/0/1",
                   vlans: tuple[int, int] = (100, 200)) -> dict[str, Any]:
    return {
        "telcos": [{"id": "sg", "name": "S", "side": "SINGAPORE"},
                   {"id": "cq", "name": "C", "side": "CHONGQING"}],
        "sites": [{"id": "s", "name": "S", "side": "SINGAPORE", "telco": "sg", "city": "c",
                   "router": router, "platform": "openconfig",
                   "ports": [{"name": port, "speed_mbps": 1000, "vlan_first": vlans[0],
                              "vlan_last": vlans[1]}]}],
    }


@pytest.mark.parametrize(("data", "message"), [
    (catalogue_data(router="sg edge 1"), "router name 'sg edge 1'"),
    (catalogue_data(router="r" * (MAX_ID_LENGTH + 1)), "router name"),
    (catalogue_data(router="sg-edge-1\n"), "router name"),
    (catalogue_data(port="xe-0/0/1\n"), "not an interface name"),
    (catalogue_data(port="0/0/1"), "not an interface name"),
    (catalogue_data(vlans=(0, 10)), f"{MIN_VLAN}..{MAX_VLAN}"),
    (catalogue_data(vlans=(100, MAX_VLAN + 1)), f"{MIN_VLAN}..{MAX_VLAN}"),
])
def test_a_catalogue_entry_the_routers_cannot_take_stops_the_service(
    data: dict[str, Any], message: str,
) -> None:
    with pytest.raises(CatalogueError, match=re.escape(message)):
        parse_catalogue(data)


def test_a_price_book_step_beyond_the_routers_rate_limits_stops_the_service() -> None:
    data = {"version": "x", "terms": [12], "bandwidth_steps_mbps": [100, MAX_BANDWIDTH_MBPS + 1],
            "currencies": {}}
    with pytest.raises(PriceBookError, match="rates the routers take"):
        parse_price_book(data)


def test_the_ids_the_order_service_gives_are_ids_the_routers_take() -> None:
    assert is_id(new_id("cct")) and is_id(new_id("ord"))
    assert not is_id("a" * (MAX_ID_LENGTH + 1)) and not is_id("-a") and not is_id("a\n")
    assert is_interface("GigabitEthernet0/0/1") and not is_interface("xe-0/0/1 ")


def yang_typedef(module: Path, name: str) -> str:
    """The body of one typedef of a YANG module (enough for length and range)."""
    text = module.read_text()
    found = re.search(r"typedef " + re.escape(name) + r" \{(.*?)\n  \}", text, re.DOTALL)
    assert found, f"typedef {name} not in {module.name}"
    return found.group(1)


def bounds(body: str, keyword: str) -> tuple[int, int]:
    found = re.search(keyword + r' "(\d+)\.\.(\d+)"', body)
    assert found, body
    return int(found.group(1)), int(found.group(2))


def test_the_limits_fit_the_routers_yang_models() -> None:
    cq = YANG / "cq-vendor" / "yang" / "idc-cq-ifm.yang"
    oc = YANG / "openconfig" / "yang" / "idc-oc-rate-limit.yang"
    # The router's description is "<circuit id> <customer's description>".
    _, description_max = bounds(yang_typedef(cq, "description-string"), "length")
    assert description_max >= MAX_ID_LENGTH + 1 + MAX_DESCRIPTION
    assert bounds(yang_typedef(cq, "vlan-id"), "range") == (MIN_VLAN, MAX_VLAN)
    _, if_name_max = bounds(yang_typedef(cq, "if-name"), "length")
    assert is_interface("x" * if_name_max) and not is_interface("x" * (if_name_max + 1))
    _, cir_kbps_max = bounds(yang_typedef(cq, "cir-kbps"), "range")
    _, rate_bps_max = bounds(yang_typedef(oc, "rate-bps"), "range")
    assert cir_kbps_max >= MAX_BANDWIDTH_MBPS * 1_000
    assert rate_bps_max >= MAX_BANDWIDTH_MBPS * 1_000_000
