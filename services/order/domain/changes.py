"""What a CHANGE or DISCONNECT order does to an ACTIVE circuit: its bandwidth, burst and
price once the order completes, and the bandwidth the order holds while pending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.order.domain.capacity import Headroom, admit, reservation_for_change
from services.order.domain.pricing import PriceBook, PriceTerms
from services.order.domain.validation import validate_bandwidth_change


@dataclass(frozen=True)
class ActiveCircuit:
    """What the rules need of the circuit an order is placed on."""

    bandwidth_mbps: int
    burst_mbps: int
    term_months: int
    currency: str


@dataclass(frozen=True)
class CircuitChange:
    bandwidth_mbps: int
    burst_mbps: int
    # Held on the channel and both ports while the order is open.
    reserved_mbps: int
    # The price from the completion on; None when the circuit's contract terms stay.
    terms: PriceTerms | None


def disconnection(circuit: ActiveCircuit) -> CircuitChange:
    """A disconnect keeps the circuit as it is until it is removed, and holds nothing."""
    return CircuitChange(circuit.bandwidth_mbps, circuit.burst_mbps, 0, None)


def bandwidth_change(circuit: ActiveCircuit, bandwidth_mbps: int, burst_mbps: int | None,
                     port_speeds: Sequence[int], headroom: Sequence[Headroom],
                     price_book: PriceBook) -> CircuitChange:
    """A new bandwidth (and burst, unchanged when not given) for ``circuit``: checked
    against the offer and the port speeds, admitted for its increase on ``headroom`` (the
    channel and both ports), priced for the contract's term and currency (which stay)."""
    burst = circuit.burst_mbps if burst_mbps is None else burst_mbps
    validate_bandwidth_change(circuit.bandwidth_mbps, bandwidth_mbps, burst, list(port_speeds),
                              price_book)
    reserved = reservation_for_change(circuit.bandwidth_mbps, bandwidth_mbps)
    admit(reserved, headroom)
    terms = price_book.price(bandwidth_mbps, circuit.term_months, circuit.currency)
    return CircuitChange(bandwidth_mbps, burst, reserved, terms)
