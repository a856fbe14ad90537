"""What a circuit's values may be for provisioning to render them: one limit per field.

The order service refuses at the door (CreateOrder, ModifyBandwidth, its catalogue and
price book at start) anything outside these limits, and provisioning's renderer checks the
same ones (services/provisioning/domain/circuits.py), so an order the API accepted never
waits for a payload that cannot be rendered. The values follow the routers' YANG models
(services/provisioning/netconf_templates/*/yang; tests/unit/order/test_limits.py reads them
back):

* the sub-interface description is the circuit id, a space and the description the events
  carry, which is built from ids only (:func:`identifier_description`: the customer's own
  free text stays in the order database); cq-vendor's ``description-string`` holds 242
  characters, so with an id of at most 64 the rest keeps 160 (OpenConfig's description has
  no length limit), and the customer's description is held to the same 160;
* a VLAN is 1..4094 (both platforms);
* the committed rate reaches 400 Gbit/s on both platforms (``cir-kbps``, ``rate-bps``), and
  so does the burst allowance above it;
* names are what both models accept as a key: an interface name as cq-vendor's ``if-name``
  (1..63 characters), a router name or circuit id of 1..64 letters, digits and ``._:-``.

Plain values and patterns, no I/O; imports no service.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 64
# \A and \Z (not ^ and $, which let a trailing newline through) so that match() and
# fullmatch() agree.
ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
INTERFACE_PATTERN = re.compile(r"\A[A-Za-z][A-Za-z0-9/.:_-]{0,62}\Z")

# The customer's part of the router description (the whole must fit cq-vendor's 242).
MAX_DESCRIPTION = 160

MIN_VLAN, MAX_VLAN = 1, 4094

MIN_BANDWIDTH_MBPS, MAX_BANDWIDTH_MBPS = 1, 400_000
MAX_BURST_MBPS = 400_000


def identifier_description(tenant_id: str) -> str:
    """The circuit description events and routers carry: ids, no customer text (at most
    4 + 64 characters, well within MAX_DESCRIPTION)."""
    return f"IDC {tenant_id}"


def is_id(value: str) -> bool:
    """A circuit id or router name both routers' models and templates accept."""
    return ID_PATTERN.match(value) is not None


def is_interface(value: str) -> bool:
    """An interface name such as ``xe-0/0/1`` or ``XGE0/0/1``."""
    return INTERFACE_PATTERN.match(value) is not None
