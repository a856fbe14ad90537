"""Merging circuits' payloads into one edit-config: every circuit's sub-interface with its
own operation, shared interfaces once, and a conflict instead of a silent mix."""

from __future__ import annotations

import pytest
from lxml import etree

from services.provisioning.domain.circuits import CircuitEnd, Operation
from services.provisioning.domain.merge import OPERATION, MergeConflict, merge_configs
from services.provisioning.domain.observe import differences, intended_leaves, running_subinterfaces
from services.provisioning.rendering import Renderer

PLATFORMS = ["openconfig", "cq-vendor"]
SUBINTERFACE = {"openconfig": "subinterface", "cq-vendor": "sub-interface"}


def end(circuit: str, interface: str, vlan: int, mbps: int = 100) -> CircuitEnd:
    return CircuitEnd(
        circuit_id=circuit,
        router_name="r1",
        interface=interface,
        vlan=vlan,
        description="Acme",
        bandwidth_mbps=mbps,
        burst_mbps=0,
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def operations_by_vlan(platform: str, merged: str) -> dict[tuple[str, int], str]:
    """(interface, vlan) -> nc:operation of each sub-interface entry in a payload."""
    root = etree.fromstring(merged.encode())
    found: dict[tuple[str, int], str] = {}
    for entry in root.iter(f"{{*}}{SUBINTERFACE[platform]}"):
        interface = entry.getparent().getparent()
        name = interface.find("{*}name").text
        key = int(entry[0].text)  # the key leaf comes first
        assert (name, key) not in found
        found[(name, key)] = entry.get(OPERATION)
    return found


@pytest.mark.parametrize("platform", PLATFORMS)
def test_mixed_operations_on_one_interface_keep_each_circuits_operation(
    renderer: Renderer, platform: str
) -> None:
    created, modified, deleted = (
        end("C1", "eth1", 101),
        end("C2", "eth1", 102),
        end("C3", "eth1", 103),
    )
    payloads = [
        renderer.render(platform, Operation.CREATE, created).content,
        renderer.render(platform, Operation.MODIFY, modified).content,
        renderer.render(platform, Operation.DELETE, deleted).content,
    ]
    merged = merge_configs(payloads)
    root = etree.fromstring(merged.encode())
    assert len(list(root.iter("{*}interface"))) == 1  # the shared port appears once
    assert operations_by_vlan(platform, merged) == {
        ("eth1", 101): "create",
        ("eth1", 102): "replace",
        ("eth1", 103): "remove",
    }
    found = running_subinterfaces(platform, merged)
    assert differences(intended_leaves(platform, created), found[("eth1", 101)]) == []
    assert differences(intended_leaves(platform, modified), found[("eth1", 102)]) == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_distinct_interfaces_each_keep_their_circuits(renderer: Renderer, platform: str) -> None:
    ends = [end("C1", "eth1", 101), end("C2", "eth2", 101), end("C3", "eth1", 102)]
    merged = merge_configs([renderer.render(platform, Operation.CREATE, e).content for e in ends])
    root = etree.fromstring(merged.encode())
    names = [i.find("{*}name").text for i in root.iter("{*}interface")]
    assert names == ["eth1", "eth2"]
    assert operations_by_vlan(platform, merged) == {
        ("eth1", 101): "create",
        ("eth2", 101): "create",
        ("eth1", 102): "create",
    }
    found = running_subinterfaces(platform, merged)
    for e in ends:
        assert differences(intended_leaves(platform, e), found[(e.interface, e.vlan)]) == []


def test_identityref_prefix_stays_declared(renderer: Renderer) -> None:
    ends = [end("C1", "eth1", 101), end("C2", "eth1", 102)]
    merged = merge_configs(
        [renderer.render("openconfig", Operation.CREATE, e).content for e in ends]
    )
    root = etree.fromstring(merged.encode())
    (kind,) = list(root.iter("{*}type"))
    prefix, _, name = (kind.text or "").partition(":")
    assert kind.nsmap[prefix] == "urn:ietf:params:xml:ns:yang:iana-if-type"
    assert name == "ethernetCsmacd"


def test_a_single_payload_comes_back_equivalent(renderer: Renderer) -> None:
    payload = renderer.render("cq-vendor", Operation.CREATE, end("C1", "eth1", 7)).content
    merged = merge_configs([payload])
    assert running_subinterfaces("cq-vendor", merged) == running_subinterfaces("cq-vendor", payload)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_two_edits_of_one_subinterface_conflict(renderer: Renderer, platform: str) -> None:
    first = renderer.render(platform, Operation.CREATE, end("C1", "eth1", 101)).content
    second = renderer.render(platform, Operation.DELETE, end("C2", "eth1", 101)).content
    with pytest.raises(MergeConflict):
        merge_configs([first, second])


def test_a_leaf_with_two_values_conflicts() -> None:
    ns = 'xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"'
    with pytest.raises(MergeConflict):
        merge_configs([f"<config {ns}><x>1</x></config>", f"<config {ns}><x>2</x></config>"])


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing"):
        merge_configs([])
    with pytest.raises(ValueError, match="well-formed"):
        merge_configs(["<config>"])
