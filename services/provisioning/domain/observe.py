"""What a router's running configuration says about circuits, and how it compares with
what is intended. Pure functions over XML text (no I/O).

A circuit end is the sub-interface ``(interface, vlan)``; its leaves are flattened into a
``{path: value}`` dict with the same paths for intended and running state, so drift is a
plain dict comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from services.provisioning.domain.circuits import CircuitEnd

OC_IF = "http://openconfig.net/yang/interfaces"
OC_VLAN = "http://openconfig.net/yang/vlan"
OC_RL = "urn:idc:yang:oc-rate-limit"
CQ_IFM = "urn:idc:yang:cq-ifm"

Leaves = dict[str, str]
SubinterfaceKey = tuple[str, int]


@dataclass(frozen=True)
class Difference:
    path: str
    intended: str
    actual: str


def _oc_base(interface: str, vlan: int) -> str:
    return f"/interfaces/interface[name={interface}]/subinterfaces/subinterface[index={vlan}]"


def _cq_base(interface: str, vlan: int) -> str:
    return (
        f"/ifm/interfaces/interface[name={interface}]/sub-interfaces/sub-interface[number={vlan}]"
    )


def _oc_intended(end: CircuitEnd) -> Leaves:
    base = _oc_base(end.interface, end.vlan)
    leaves = {
        f"{base}/config/description": end.router_description,
        f"{base}/vlan/config/vlan-id": str(end.vlan),
    }
    for direction in ("ingress", "egress"):
        leaves[f"{base}/rate-limit/{direction}/config/cir"] = str(end.cir_bps)
        leaves[f"{base}/rate-limit/{direction}/config/burst"] = str(end.burst_bytes)
    return leaves


def _cq_intended(end: CircuitEnd) -> Leaves:
    base = _cq_base(end.interface, end.vlan)
    leaves = {
        f"{base}/description": end.router_description,
        f"{base}/dot1q/vlan-id": str(end.vlan),
    }
    for direction in ("inbound", "outbound"):
        leaves[f"{base}/car/{direction}/car/cir-kbps"] = str(end.cir_kbps)
        leaves[f"{base}/car/{direction}/car/cbs-bytes"] = str(end.burst_bytes)
    return leaves


def _text(element: ET.Element, path: str, ns: dict[str, str]) -> str | None:
    found = element.find(path, ns)
    return None if found is None or found.text is None else str(found.text)


def _put(leaves: Leaves, path: str, value: str | None) -> None:
    if value is not None:
        leaves[path] = value


def _oc_running(root: ET.Element) -> dict[SubinterfaceKey, Leaves]:
    ns = {"oc": OC_IF, "v": OC_VLAN, "rl": OC_RL}
    found: dict[SubinterfaceKey, Leaves] = {}
    for interface in root.iterfind(".//oc:interfaces/oc:interface", ns):
        name = _text(interface, "oc:name", ns) or ""
        for sub in interface.iterfind("oc:subinterfaces/oc:subinterface", ns):
            index = int(_text(sub, "oc:index", ns) or 0)
            base = _oc_base(name, index)
            leaves: Leaves = {}
            _put(leaves, f"{base}/config/description", _text(sub, "oc:config/oc:description", ns))
            _put(leaves, f"{base}/vlan/config/vlan-id", _text(sub, "v:vlan/v:config/v:vlan-id", ns))
            for direction in ("ingress", "egress"):
                cfg = f"rl:rate-limit/rl:{direction}/rl:config"
                prefix = f"{base}/rate-limit/{direction}/config"
                _put(leaves, f"{prefix}/cir", _text(sub, f"{cfg}/rl:cir", ns))
                _put(leaves, f"{prefix}/burst", _text(sub, f"{cfg}/rl:burst", ns))
            found[(name, index)] = leaves
    return found


def _cq_running(root: ET.Element) -> dict[SubinterfaceKey, Leaves]:
    ns = {"cq": CQ_IFM}
    found: dict[SubinterfaceKey, Leaves] = {}
    for interface in root.iterfind(".//cq:ifm/cq:interfaces/cq:interface", ns):
        name = _text(interface, "cq:name", ns) or ""
        for sub in interface.iterfind("cq:sub-interfaces/cq:sub-interface", ns):
            number = int(_text(sub, "cq:number", ns) or 0)
            base = _cq_base(name, number)
            leaves: Leaves = {}
            _put(leaves, f"{base}/description", _text(sub, "cq:description", ns))
            _put(leaves, f"{base}/dot1q/vlan-id", _text(sub, "cq:dot1q/cq:vlan-id", ns))
            for direction in ("inbound", "outbound"):
                car = f"cq:car/cq:{direction}/cq:car"
                prefix = f"{base}/car/{direction}/car"
                _put(leaves, f"{prefix}/cir-kbps", _text(sub, f"{car}/cq:cir-kbps", ns))
                _put(leaves, f"{prefix}/cbs-bytes", _text(sub, f"{car}/cq:cbs-bytes", ns))
            found[(name, number)] = leaves
    return found


_INTENDED: dict[str, Callable[[CircuitEnd], Leaves]] = {
    "openconfig": _oc_intended,
    "cq-vendor": _cq_intended,
}
_RUNNING: dict[str, Callable[[ET.Element], dict[SubinterfaceKey, Leaves]]] = {
    "openconfig": _oc_running,
    "cq-vendor": _cq_running,
}


def intended_leaves(platform: str, end: CircuitEnd) -> Leaves:
    return _INTENDED[platform](end)


def running_subinterfaces(platform: str, running_xml: str) -> dict[SubinterfaceKey, Leaves]:
    """Every sub-interface in a ``<data>`` (get-config reply) of ``platform``."""
    root = ET.fromstring(running_xml.encode("utf-8"))
    return _RUNNING[platform](root)


# Per platform: the sub-interface list, entry and key elements, and what wraps the interfaces.
_SUBINTERFACE_FILTER: dict[str, tuple[str, str, str, str]] = {
    "openconfig": (
        "subinterfaces", "subinterface", "index", f'<interfaces xmlns="{OC_IF}">{{}}</interfaces>'
    ),
    "cq-vendor": (
        "sub-interfaces",
        "sub-interface",
        "number",
        f'<ifm xmlns="{CQ_IFM}"><interfaces>{{}}</interfaces></ifm>',
    ),
}


def running_filter(platform: str, keys: Iterable[SubinterfaceKey]) -> str:
    """A subtree filter selecting only these sub-interfaces of a get-config: a step reads
    back what it touched, not the whole datastore (thousands of circuits on a router)."""
    try:
        listed, entry, key, wrapper = _SUBINTERFACE_FILTER[platform]
    except KeyError:
        raise ValueError(f"no running filter for platform {platform!r}") from None
    by_interface: dict[str, list[int]] = {}
    for name, vlan in sorted(set(keys)):
        by_interface.setdefault(name, []).append(vlan)
    interfaces = "".join(
        f"<interface><name>{escape(name)}</name><{listed}>"
        + "".join(f"<{entry}><{key}>{v}</{key}></{entry}>" for v in vlans)
        + f"</{listed}></interface>"
        for name, vlans in by_interface.items()
    )
    return wrapper.format(interfaces)


def differences(intended: Leaves | None, actual: Leaves | None) -> list[Difference]:
    """Leaf-by-leaf differences; an absent side compares as empty values."""
    want = intended or {}
    have = actual or {}
    return [
        Difference(path, want.get(path, ""), have.get(path, ""))
        for path in sorted(set(want) | set(have))
        if want.get(path) != have.get(path)
    ]


def circuit_id_of(leaves: Leaves) -> str:
    """The circuit id a sub-interface carries (first word of its description), or ''."""
    for path, value in leaves.items():
        if path.endswith("description"):
            return value.split(" ", 1)[0]
    return ""
