"""Merging several circuits' edit-config payloads into one ``<config>``.

A router holding thousands of circuits spends long on every edit-config, and about as long
on one edit of many circuits as on one of a single circuit, so a batch goes out as one
edit. Elements match by tag and, for the YANG lists of the templates (``LIST_KEYS``), by
their key leaf: matching containers and list entries merge child by child, a leaf must
carry the same value in both. An element carrying ``nc:operation`` (a circuit's own
sub-interface) is never merged into: meeting another element of the same identity is a
:class:`MergeConflict`, as is a leaf with two values or an unknown list whose entries
differ, and the caller then edits the payloads one by one. Namespace declarations stay
on their elements (lxml keeps them), which identityref values such as ``ianaift:...``
rely on.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy

from lxml import etree

NETCONF_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
OPERATION = f"{{{NETCONF_NS}}}operation"

_OC = "http://openconfig.net/yang/interfaces"
_CQ = "urn:idc:yang:cq-ifm"

# List element -> its key leaf, both in Clark notation, for every list the templates use.
LIST_KEYS: dict[str, str] = {
    f"{{{_OC}}}interface": f"{{{_OC}}}name",
    f"{{{_OC}}}subinterface": f"{{{_OC}}}index",
    f"{{{_CQ}}}interface": f"{{{_CQ}}}name",
    f"{{{_CQ}}}sub-interface": f"{{{_CQ}}}number",
}

# Our own rendered payloads, but parsed as untrusted all the same.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, remove_blank_text=True, remove_comments=True
)


class MergeConflict(Exception):
    """The payloads cannot go out as one edit (send them one by one)."""


def merge_configs(payloads: Sequence[str]) -> str:
    """One ``<config>`` that edits what every payload edits; see the module docstring."""
    if not payloads:
        raise ValueError("nothing to merge")
    roots = [_parse(p) for p in payloads]
    merged = roots[0]
    for root in roots[1:]:
        if root.tag != merged.tag:
            raise MergeConflict(f"root elements differ: {merged.tag} and {root.tag}")
        _merge_children(merged, root)
    return str(etree.tostring(merged, encoding="unicode"))


def _parse(payload: str) -> etree._Element:
    try:
        return etree.fromstring(payload.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"payload is not well-formed XML: {exc}") from exc


def _identity(element: etree._Element) -> tuple[str, str | None]:
    key_tag = LIST_KEYS.get(str(element.tag))
    if key_tag is None:
        return str(element.tag), None
    key = element.find(key_tag)
    if key is None or key.text is None:
        raise MergeConflict(f"{element.tag} entry without its key {key_tag}")
    return str(element.tag), key.text.strip()


def _merge_children(into: etree._Element, source: etree._Element) -> None:
    present = {_identity(c): c for c in into if isinstance(c.tag, str)}
    for child in source:
        if not isinstance(child.tag, str):
            continue
        identity = _identity(child)
        existing = present.get(identity)
        if existing is None:
            copied = deepcopy(child)
            into.append(copied)
            present[identity] = copied
            continue
        if OPERATION in existing.attrib or OPERATION in child.attrib:
            raise MergeConflict(f"{identity} edited by more than one payload")
        if dict(existing.attrib) != dict(child.attrib):
            raise MergeConflict(f"{identity} carries different attributes")
        if len(existing) == 0 and len(child) == 0:
            if (existing.text or "").strip() != (child.text or "").strip():
                raise MergeConflict(f"{identity} has two values")
            continue
        _merge_children(existing, child)
