"""Capacity admission and VLAN allocation.

The channel and every port are never oversold: ``free = capacity - committed - reserved``
and an order is admitted only if what it adds fits the free bandwidth of the channel and of
both its ports. Committed bandwidth belongs to circuits that carry traffic (ACTIVE,
MODIFYING, DISCONNECTING); reserved bandwidth is held by open orders (a NEW order's
bandwidth, a CHANGE order's increase) and returns to free when the order ends, whatever the
outcome. The caller evaluates this under a lock that serialises admissions.
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


def shortfalls(request_mbps: int, resources: Iterable[Headroom]) -> list[str]:
    """One sentence per resource that cannot take ``request_mbps`` more."""
    return [
        f"{r.name} has {r.free_mbps} Mbps free of {r.capacity_mbps} Mbps, "
        f"{request_mbps} Mbps asked"
        for r in resources
        if request_mbps > r.free_mbps
    ]


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


def allocate_vlan(
    port_name: str, first: int, last: int, used: set[int], wanted: int | None
) -> int:
    """The VLAN asked for if free, else the lowest free one in the port's range."""
    if wanted is not None:
        if wanted in used:
            raise CapacityExhausted(
                f"VLAN {wanted} is already in use on port {port_name}; leave the VLAN out to "
                "get a free one assigned"
            )
        return wanted
    for vlan in range(first, last + 1):
        if vlan not in used:
            return vlan
    raise CapacityExhausted(f"port {port_name} has no free VLAN left in {first}..{last}")
