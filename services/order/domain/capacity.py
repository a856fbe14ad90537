"""Capacity admission and VLAN allocation.

The channel and every port are never oversold: ``free = capacity - committed - reserved``
and an order is admitted only if what it adds fits the free bandwidth of the channel and of
both its ports. Committed bandwidth belongs to circuits that carry traffic (ACTIVE,
MODIFYING, DISCONNECTING); reserved bandwidth is held by open orders (a NEW order's
bandwidth, a CHANGE order's increase) and returns to free when the order ends, whatever the
outcome. The caller evaluates this under a lock that serialises admissions.

Burst allowance is not counted: admission sells the committed rate (CIR) only. Bandwidth
above the CIR, up to the circuit's burst allowance, is carried when the channel and ports
have room at that moment, is not guaranteed, and is billed at the 95th percentile
(README "Burst allowance"). So ``request_mbps`` is a bandwidth in the CIR sense, and an
order whose CIR fits is admitted whatever its burst.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import CapacityExhausted


@dataclass(frozen=True)
class Headroom:
    """Bandwidth of one resource (the channel or a port), in Mbps."""

    name: str
    capacity_mbps: int
    committed_mbps: int
    reserved_mbps: int

    @property
    def free_mbps(self) -> int:
        return max(0, self.capacity_mbps - self.committed_mbps - self.reserved_mbps)


@dataclass(frozen=True)
class Channels:
    """The real channel and the sandbox pool (README "Sandbox"): a circuit's bandwidth
    counts against exactly one of them, the sandbox pool when its ports are sandbox ports."""

    real: Headroom
    sandbox: Headroom

    def of(self, sandbox: bool) -> Headroom:
        return self.sandbox if sandbox else self.real


def shortfalls(request_mbps: int, resources: Iterable[Headroom]) -> list[str]:
    """One sentence per resource that cannot take ``request_mbps`` more."""
    return [
        f"{r.name} has {r.free_mbps} Mbps free of {r.capacity_mbps} Mbps, "
        f"{request_mbps} Mbps asked"
        for r in resources
        if request_mbps > r.free_mbps
    ]


@dataclass(frozen=True)
class VlanAsk:
    """One end of a quoted circuit, as far as its VLAN is concerned."""

    port_id: str
    wanted: int | None  # None: the lowest free VLAN is assigned
    wanted_in_use: bool
    used_count: int
    vlan_count: int


def vlan_shortfalls(ends: Iterable[VlanAsk]) -> list[str]:
    """One sentence per end whose VLAN cannot be had: the one asked for is taken, or the
    port has none free."""
    reasons = []
    for end in ends:
        if end.wanted is not None and end.wanted_in_use:
            reasons.append(f"VLAN {end.wanted} is already in use on port {end.port_id}")
        elif end.used_count >= end.vlan_count:
            reasons.append(f"port {end.port_id} has no free VLAN left")
    return reasons


def admit(request_mbps: int, resources: Iterable[Headroom]) -> None:
    """Raise CapacityExhausted, saying what is left, unless every resource has room."""
    if request_mbps <= 0:
        return
    problems = shortfalls(request_mbps, resources)
    if problems:
        raise CapacityExhausted("not enough bandwidth: " + "; ".join(problems))


def reservation_for_change(current_mbps: int, new_mbps: int) -> int:
    """What a bandwidth change holds while pending: the increase (a decrease holds nothing)."""
    return max(0, new_mbps - current_mbps)


class VlanPool:
    """The VLANs of one port while orders are admitted one after another: a VLAN taken by
    one order is in use for the next."""

    def __init__(self, port_name: str, first: int, last: int, used: set[int]) -> None:
        self.port_name = port_name
        self.first = first
        self.last = last
        self.used = used
        self._lowest_candidate = first  # every VLAN below it is in use

    def choose(self, wanted: int | None) -> int:
        """The VLAN asked for if free, else the lowest free one in the port's range; the
        pool is not changed (``take`` does that)."""
        if wanted is not None:
            if wanted in self.used:
                raise CapacityExhausted(
                    f"VLAN {wanted} is already in use on port {self.port_name}; leave the VLAN "
                    "out to get a free one assigned"
                )
            return wanted
        vlan = self._lowest_candidate
        while vlan <= self.last and vlan in self.used:
            vlan += 1
        self._lowest_candidate = vlan
        if vlan > self.last:
            raise CapacityExhausted(
                f"port {self.port_name} has no free VLAN left in {self.first}..{self.last}")
        return vlan

    def take(self, vlan: int) -> None:
        self.used.add(vlan)
