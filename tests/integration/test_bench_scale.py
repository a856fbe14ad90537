"""The channel-scale rows' catalogue and sizes: the catalogue the order service would load
holds the channel's 26,000 smallest circuits on its ports' VLANs and speeds, and the order
service reads it from IDC_ORDER_CATALOGUE_FILE. Not a unit test: the bench modules import
the devstack (tests/unit/test_isolation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale import (
    CHANNEL_CIRCUITS,
    CIRCUIT_MBPS,
    SIZES,
    big_tenant_circuits,
    ports,
    write_catalogue,
)
from bench.scale_provisioning import scale_circuit
from services.order.domain.catalogue import Side, load_catalogue
from services.order.settings import OrderSettings

pytestmark = pytest.mark.integration


def test_bench_catalogue_holds_the_channel_at_its_smallest_circuit(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path / "catalogue.toml"))
    for telco, side in (("sg", Side.SINGAPORE), ("cq", Side.CHONGQING)):
        side_ports = [catalogue.ports[port_id] for port_id in ports(telco)]
        assert all(catalogue.side_of(port) is side for port in side_ports)
        per_port = -(-CHANNEL_CIRCUITS // len(side_ports))
        assert all(per_port <= port.vlan_count for port in side_ports)
        assert all(per_port * CIRCUIT_MBPS <= port.speed_mbps for port in side_ports)
        assert len({catalogue.site_of(port).router for port in side_ports}) > 1


def test_channel_size_and_its_big_tenant() -> None:
    assert SIZES["channel"].circuits == SIZES["channel"].billing == CHANNEL_CIRCUITS
    assert big_tenant_circuits(CHANNEL_CIRCUITS) == 2_000
    assert big_tenant_circuits(10) == 1


def test_provisioned_circuits_never_share_a_router_vlan() -> None:
    ends = {(p.a_end.router_name, p.a_end.interface_name, p.a_end.vlan_id)
            for p in map(scale_circuit, range(0, CHANNEL_CIRCUITS, 7))}
    assert len(ends) == len(range(0, CHANNEL_CIRCUITS, 7))


def test_order_service_reads_its_catalogue_file_from_the_environment() -> None:
    assert OrderSettings.from_env({}).catalogue_file is None
    settings = OrderSettings.from_env({"IDC_ORDER_CATALOGUE_FILE": " /etc/idc/cat.toml "})
    assert settings.catalogue_file == Path("/etc/idc/cat.toml")
