"""A circuit end as a router gets it: validated values, nothing else (no I/O).

Every value that reaches a template passes through :func:`circuit_end` first, so a template
never sees an unchecked string or number. The description is the only text field (built
from ids by the order service, but provisioning does not rely on that); it is checked for
what XML cannot carry (control characters) and for length, and escaped by the renderer, so
``</description><config>`` or ``]]>]]>`` arrive on the router as text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from idc.events.v1 import common_pb2
from idc.type.v1 import circuit_operation_pb2, side_pb2
from services.common.errors import FieldViolation, InvalidArgument
from services.common.limits import (
    ID_PATTERN,
    INTERFACE_PATTERN,
    MAX_BANDWIDTH_MBPS,
    MAX_BURST_MBPS,
    MAX_DESCRIPTION,
    MAX_VLAN,
    MIN_BANDWIDTH_MBPS,
    MIN_VLAN,
)

# The limits are shared with the order service, which refuses at the door what they refuse.
CIRCUIT_ID_RE = ID_PATTERN
INTERFACE_RE = INTERFACE_PATTERN
# The committed burst is 100 ms of the peak rate (CIR plus burst allowance), the common
# vendor default, bounded by what both platforms' models accept.
BURST_WINDOW_S_NUM, BURST_WINDOW_S_DEN = 1, 10
MIN_BURST_BYTES, MAX_BURST_BYTES = 1_500, 1_073_741_824


class Operation(enum.Enum):
    CREATE = circuit_operation_pb2.CIRCUIT_OPERATION_CREATE
    MODIFY = circuit_operation_pb2.CIRCUIT_OPERATION_MODIFY
    DELETE = circuit_operation_pb2.CIRCUIT_OPERATION_DELETE

    @property
    def template_key(self) -> str:
        return self.name.lower()

    @classmethod
    def from_proto(cls, value: int) -> Operation:
        try:
            return cls(value)
        except ValueError:
            raise InvalidArgument.for_field(
                "operation", "must be CREATE, MODIFY or DELETE"
            ) from None


class Side(enum.Enum):
    SINGAPORE = side_pb2.SIDE_SINGAPORE
    CHONGQING = side_pb2.SIDE_CHONGQING

    @classmethod
    def from_proto(cls, value: int) -> Side:
        try:
            return cls(value)
        except ValueError:
            raise InvalidArgument.for_field("side", "must be SINGAPORE or CHONGQING") from None


# Canonical telco ids of the two sides (shared with the order service).
TELCO_OF_SIDE = {Side.SINGAPORE: "sg", Side.CHONGQING: "cq"}
SIDE_OF_TELCO = {telco: side for side, telco in TELCO_OF_SIDE.items()}


@dataclass(frozen=True)
class CircuitEnd:
    """One router's part of a circuit, every field checked."""

    circuit_id: str
    router_name: str
    interface: str
    vlan: int
    description: str
    bandwidth_mbps: int
    burst_mbps: int

    @property
    def router_description(self) -> str:
        """What the sub-interface's description says: the circuit id first (CheckSync finds
        circuits by it), then the event's description, which the order service builds from
        ids (services.common.limits.identifier_description), never the customer's text."""
        return f"{self.circuit_id} {self.description}".rstrip()

    @property
    def cir_bps(self) -> int:
        return self.bandwidth_mbps * 1_000_000

    @property
    def cir_kbps(self) -> int:
        return self.bandwidth_mbps * 1_000

    @property
    def burst_bytes(self) -> int:
        peak_bps = (self.bandwidth_mbps + self.burst_mbps) * 1_000_000
        size = peak_bps * BURST_WINDOW_S_NUM // BURST_WINDOW_S_DEN // 8
        return max(MIN_BURST_BYTES, min(MAX_BURST_BYTES, size))


def _check_description(text: str) -> str | None:
    if len(text) > MAX_DESCRIPTION:
        return f"at most {MAX_DESCRIPTION} characters"
    for char in text:
        code = ord(char)
        # XML 1.0 cannot carry C0 controls (other than tab/newline), surrogates or
        # U+FFFE/U+FFFF; a router description has no use for line breaks either.
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            return f"must not contain the control character U+{code:04X}"
    return None


def circuit_end(circuit: common_pb2.CircuitParameters, side: Side) -> CircuitEnd:
    """The validated end of ``circuit`` on ``side``; InvalidArgument names every bad field."""
    endpoint = circuit.a_end if side is Side.SINGAPORE else circuit.z_end
    prefix = "circuit.a_end" if side is Side.SINGAPORE else "circuit.z_end"
    violations: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(field, description))

    if not CIRCUIT_ID_RE.match(circuit.circuit_id):
        bad("circuit.circuit_id", "1 to 64 letters, digits or . _ : -, starting alphanumeric")
    if not CIRCUIT_ID_RE.match(endpoint.router_name):
        bad(f"{prefix}.router_name", "1 to 64 letters, digits or . _ : -")
    if not INTERFACE_RE.match(endpoint.interface_name):
        bad(f"{prefix}.interface_name", "an interface name such as xe-0/0/1")
    if not MIN_VLAN <= endpoint.vlan_id <= MAX_VLAN:
        bad(f"{prefix}.vlan_id", f"must be between {MIN_VLAN} and {MAX_VLAN}")
    if not MIN_BANDWIDTH_MBPS <= circuit.bandwidth_mbps <= MAX_BANDWIDTH_MBPS:
        bad(
            "circuit.bandwidth_mbps",
            f"must be between {MIN_BANDWIDTH_MBPS} and {MAX_BANDWIDTH_MBPS}",
        )
    if not 0 <= circuit.burst_mbps <= MAX_BURST_MBPS:
        bad("circuit.burst_mbps", f"must be between 0 and {MAX_BURST_MBPS}")
    problem = _check_description(circuit.description)
    if problem:
        bad("circuit.description", problem)
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(f"circuit cannot be rendered: {summary}", violations)
    return CircuitEnd(
        circuit_id=circuit.circuit_id,
        router_name=endpoint.router_name,
        interface=endpoint.interface_name,
        vlan=endpoint.vlan_id,
        description=circuit.description,
        bandwidth_mbps=circuit.bandwidth_mbps,
        burst_mbps=circuit.burst_mbps,
    )
