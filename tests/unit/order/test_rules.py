"""The business rules the use cases call, without I/O: a quote's VLAN shortfalls, a change
of bandwidth, repeated requests, quote expiry and provisioning outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import (
    AlreadyExists,
    CapacityExhausted,
    FailedPrecondition,
    InvalidArgument,
)
from services.order.domain.capacity import Headroom, VlanAsk, vlan_shortfalls
from services.order.domain.changes import ActiveCircuit, bandwidth_change, disconnection
from services.order.domain.idempotency import replayed_order
from services.order.domain.lifecycle import OrderState, OrderType
from services.order.domain.outcomes import OutcomeVerdict, decide_outcome, failure_reason
from services.order.domain.pricing import load_price_book
from services.order.domain.validation import check_quote_unexpired

PRICES = load_price_book()
CIRCUIT = ActiveCircuit(bandwidth_mbps=100, burst_mbps=50, term_months=12, currency="SGD")
ROOMY = [Headroom("the channel", 260_000, 0, 0), Headroom("port a", 10_000, 100, 0),
         Headroom("port z", 10_000, 100, 0)]
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def test_a_quote_names_a_taken_vlan_and_a_port_without_free_ones() -> None:
    assert vlan_shortfalls([
        VlanAsk("sg:1", wanted=200, wanted_in_use=True, used_count=1, vlan_count=10),
        VlanAsk("cq:1", wanted=None, wanted_in_use=False, used_count=10, vlan_count=10),
    ]) == ["VLAN 200 is already in use on port sg:1", "port cq:1 has no free VLAN left"]
    assert vlan_shortfalls([
        VlanAsk("sg:1", wanted=200, wanted_in_use=False, used_count=9, vlan_count=10),
        VlanAsk("cq:1", wanted=None, wanted_in_use=False, used_count=9, vlan_count=10),
    ]) == [], "one free VLAN is enough"


def test_a_bandwidth_increase_holds_the_increase_and_is_priced_for_the_same_term() -> None:
    change = bandwidth_change(CIRCUIT, 200, None, [10_000, 10_000], ROOMY, PRICES)
    assert (change.bandwidth_mbps, change.burst_mbps, change.reserved_mbps) == (200, 50, 100)
    assert change.terms == PRICES.price(200, 12, "SGD")


def test_a_decrease_holds_nothing_and_a_burst_given_replaces_the_old_one() -> None:
    full = [Headroom("the channel", 100, 100, 0)]
    change = bandwidth_change(CIRCUIT, 50, 0, [10_000, 10_000], full, PRICES)
    assert (change.bandwidth_mbps, change.burst_mbps, change.reserved_mbps) == (50, 0, 0)


def test_a_change_is_checked_before_it_is_admitted() -> None:
    full = [Headroom("the channel", 150, 100, 0)]
    with pytest.raises(InvalidArgument, match="not offered"):
        bandwidth_change(CIRCUIT, 150, None, [10_000, 10_000], full, PRICES)
    with pytest.raises(InvalidArgument, match="exceeds the port speed"):
        bandwidth_change(CIRCUIT, 2000, None, [1000, 10_000], ROOMY, PRICES)
    with pytest.raises(CapacityExhausted, match="the channel has 50 Mbps free"):
        bandwidth_change(CIRCUIT, 200, None, [10_000, 10_000], full, PRICES)


def test_a_disconnect_keeps_the_circuit_and_its_terms_and_holds_nothing() -> None:
    change = disconnection(CIRCUIT)
    assert (change.bandwidth_mbps, change.burst_mbps, change.reserved_mbps) == (100, 50, 0)
    assert change.terms is None


def test_a_repeated_request_replays_its_order_and_a_reused_id_is_refused() -> None:
    assert replayed_order("r-1", "hash", None) is None
    assert replayed_order("r-1", "hash", ("ord-1", "hash")) == "ord-1"
    with pytest.raises(AlreadyExists, match="'r-1' was already used for order ord-1"):
        replayed_order("r-1", "other", ("ord-1", "hash"))


def test_a_quote_holds_until_it_expires() -> None:
    check_quote_unexpired("qte-1", T0 + timedelta(seconds=1), T0)
    with pytest.raises(FailedPrecondition, match="quote qte-1 expired at 2026-12-02T10:00"):
        check_quote_unexpired("qte-1", T0, T0)


@pytest.mark.parametrize("state", [OrderState.APPROVED, OrderState.IN_PROGRESS])
def test_an_outcome_ends_an_order_with_provisioning(state: OrderState) -> None:
    assert decide_outcome("o", state, OrderType.CHANGE, "CircuitModified",
                          OrderType.CHANGE) is OutcomeVerdict.SUCCEED
    assert decide_outcome("o", state, OrderType.CHANGE, "ProvisioningFailed",
                          None) is OutcomeVerdict.FAIL


def test_a_repeated_outcome_is_ignored_and_one_that_cannot_fit_is_refused() -> None:
    assert decide_outcome("o", OrderState.COMPLETED, OrderType.NEW, "CircuitActivated",
                          OrderType.NEW) is OutcomeVerdict.IGNORE
    with pytest.raises(ValueError, match="never handed to provisioning"):
        decide_outcome("o", OrderState.PENDING_APPROVAL, OrderType.NEW, "CircuitActivated",
                       OrderType.NEW)
    with pytest.raises(ValueError, match="CircuitDisconnected does not fit NEW order o"):
        decide_outcome("o", OrderState.APPROVED, OrderType.NEW, "CircuitDisconnected",
                       OrderType.DISCONNECT)


def test_a_failure_reason_names_the_routers_that_said_why() -> None:
    assert failure_reason("commit refused", [("sg-edge-1", "locked"), ("cq-edge-1", "")]) == (
        "provisioning failed: commit refused (sg-edge-1: locked)")
    assert failure_reason("timed out", []) == "provisioning failed: timed out"
