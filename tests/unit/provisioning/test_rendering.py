"""Rendering: values validated first, XML escaped, payloads stable, and what a template
writes is what the running-configuration reader finds."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from idc.events.v1 import common_pb2
from idc.type.v1 import side_pb2
from services.common.errors import InvalidArgument
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.domain.observe import (
    circuit_id_of,
    differences,
    intended_leaves,
    running_filter,
    running_subinterfaces,
)
from services.provisioning.rendering import Renderer, payload_sha256

PLATFORM_OF_SIDE = {Side.SINGAPORE: "openconfig", Side.CHONGQING: "cq-vendor"}
HOSTILE = [
    "</description><config>",
    "]]>]]>",
    "A&B <x> 'q' \"dq\"",
    "<![CDATA[x]]>",
    "&lt;already-escaped&gt;",
    "<!DOCTYPE x [<!ENTITY e 'boom'>]>&e;",
]


def params(
    description: str = "Acme HQ", vlan: int = 101, mbps: int = 100
) -> common_pb2.CircuitParameters:
    return common_pb2.CircuitParameters(
        circuit_id="CKT-0001",
        tenant_id="t1",
        a_end=common_pb2.CircuitEndpoint(
            side=side_pb2.SIDE_SINGAPORE,
            telco_id="sg",
            router_name="sg-edge-1",
            interface_name="xe-0/0/1",
            vlan_id=vlan,
        ),
        z_end=common_pb2.CircuitEndpoint(
            side=side_pb2.SIDE_CHONGQING,
            telco_id="cq",
            router_name="cq-edge-1",
            interface_name="GigabitEthernet0/0/1",
            vlan_id=vlan,
        ),
        bandwidth_mbps=mbps,
        burst_mbps=0,
        description=description,
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize("description", HOSTILE)
def test_hostile_description_arrives_as_text(
    renderer: Renderer, side: Side, description: str
) -> None:
    end = circuit_end(params(description), side)
    payload = renderer.render(PLATFORM_OF_SIDE[side], Operation.CREATE, end).content
    assert "]]>]]>" not in payload
    root = ET.fromstring(payload.encode())
    # Exactly one <config>, and the description element holds the text unchanged.
    assert root.tag.endswith("}config")
    assert not [e for e in root if str(e.tag).endswith("}config")]
    texts = [e.text for e in root.iter() if str(e.tag).endswith("}description")]
    assert texts == [f"CKT-0001 {description}"]


@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize("operation", list(Operation))
def test_payload_is_well_formed_and_stable(
    renderer: Renderer, side: Side, operation: Operation
) -> None:
    end = circuit_end(params(), side)
    first = renderer.render(PLATFORM_OF_SIDE[side], operation, end)
    second = renderer.render(PLATFORM_OF_SIDE[side], operation, end)
    ET.fromstring(first.content.encode())
    assert first == second
    assert first.sha256 == payload_sha256(first.content)
    assert first.template_version == "1"
    changed = renderer.render(
        PLATFORM_OF_SIDE[side], operation, circuit_end(params(mbps=200), side)
    )
    if operation is Operation.DELETE:
        assert changed.sha256 == first.sha256  # a delete does not depend on the bandwidth
    else:
        assert changed.sha256 != first.sha256


@pytest.mark.parametrize("side", list(Side))
def test_create_payload_reads_back_as_intended(renderer: Renderer, side: Side) -> None:
    platform = PLATFORM_OF_SIDE[side]
    end = circuit_end(params(description="x <y>"), side)
    payload = renderer.render(platform, Operation.CREATE, end).content
    found = running_subinterfaces(platform, payload)
    assert list(found) == [(end.interface, 101)]
    leaves = found[(end.interface, 101)]
    assert differences(intended_leaves(platform, end), leaves) == []
    assert circuit_id_of(leaves) == "CKT-0001"
    drifted = dict(leaves)
    rate_path = next(p for p in drifted if p.endswith(("/cir", "/cir-kbps")))
    drifted[rate_path] = "1"
    assert [d.path for d in differences(intended_leaves(platform, end), drifted)] == [rate_path]


def test_rates_and_burst() -> None:
    end = circuit_end(params(mbps=100), Side.SINGAPORE)
    assert (end.cir_bps, end.cir_kbps, end.burst_bytes) == (100_000_000, 100_000, 1_250_000)
    assert circuit_end(params(mbps=1), Side.SINGAPORE).burst_bytes == 12_500
    assert circuit_end(params(mbps=400_000), Side.SINGAPORE).burst_bytes == 1_073_741_824


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: setattr(p, "description", "line\nbreak"), "circuit.description"),
        (lambda p: setattr(p, "description", "nul\x00"), "circuit.description"),
        (lambda p: setattr(p, "description", "x" * 161), "circuit.description"),
        (lambda p: setattr(p, "circuit_id", "a b"), "circuit.circuit_id"),
        (lambda p: setattr(p.a_end, "vlan_id", 4095), "circuit.a_end.vlan_id"),
        (lambda p: setattr(p.a_end, "vlan_id", 0), "circuit.a_end.vlan_id"),
        (
            lambda p: setattr(p.a_end, "interface_name", "xe-0/0/1<x/>"),
            "circuit.a_end.interface_name",
        ),
        (lambda p: setattr(p, "bandwidth_mbps", 0), "circuit.bandwidth_mbps"),
        (lambda p: setattr(p, "bandwidth_mbps", 400_001), "circuit.bandwidth_mbps"),
    ],
)
def test_bad_values_refused_before_rendering(change, field) -> None:  # type: ignore[no-untyped-def]
    p = params()
    change(p)
    with pytest.raises(InvalidArgument) as refused:
        circuit_end(p, Side.SINGAPORE)
    assert [v.field for v in refused.value.violations] == [field]
    assert field in refused.value.message


@pytest.mark.parametrize("side", list(Side))
def test_the_read_back_filter_selects_the_sub_interfaces_asked_for(side: Side) -> None:
    platform = PLATFORM_OF_SIDE[side]
    interface = circuit_end(params(), side).interface
    keys = [(interface, 300), (interface, 101), ("other<&>", 7), (interface, 101)]
    subtree = running_filter(platform, keys)
    # A subtree filter has the shape of the data it selects: read as a reply, it holds
    # exactly the sub-interfaces asked for.
    assert set(running_subinterfaces(platform, f"<data>{subtree}</data>")) == set(keys)


def test_no_read_back_filter_for_an_unknown_platform() -> None:
    with pytest.raises(ValueError, match="no running filter for platform 'acme'"):
        running_filter("acme", [("xe-0/0/1", 1)])
