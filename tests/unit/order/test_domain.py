"""The order domain without I/O: catalogue, price book, validation, capacity, lifecycle."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from services.common.errors import (
    CapacityExhausted,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from services.order.domain.capacity import Headroom, VlanPool, admit, reservation_for_change
from services.order.domain.catalogue import CatalogueError, Side, load_catalogue, parse_catalogue
from services.order.domain.lifecycle import (
    ApprovalSlot,
    ApprovalState,
    Approver,
    CircuitState,
    OrderState,
    OrderType,
    Outcome,
    PlanContent,
    PlanDecision,
    PlanVerdict,
    can_transition,
    check_cancellable,
    circuit_state_after,
    decide_approval,
    decide_plan,
    superseded_by_plan,
)
from services.order.domain.pricing import PriceBookError, load_price_book, parse_price_book
from services.order.domain.validation import CircuitRequest, validate_circuit_request

CATALOGUE = load_catalogue()
PRICES = load_price_book()
GOOD = CircuitRequest(
    a_end_port_id="sg-edge-1:xe-0/0/1",
    z_end_port_id="cq-edge-1:XGE0/0/1",
    a_end_vlan_id=None,
    z_end_vlan_id=None,
    bandwidth_mbps=100,
    burst_mbps=50,
    term_months=12,
    currency="SGD",
    customer_reference="PO-4711",
    description="acme primary link",
)


def violations(request: CircuitRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as refused:
        validate_circuit_request(request, CATALOGUE, PRICES, "acme")
    return {v.field: v.description for v in refused.value.violations}


def test_catalogue_has_one_router_per_side_with_the_canonical_names() -> None:
    routers = {site.side: site.router for site in CATALOGUE.sites.values() if not site.sandbox}
    assert routers == {Side.SINGAPORE: "sg-edge-1", Side.CHONGQING: "cq-edge-1"}
    sandbox = {site.side: site.router for site in CATALOGUE.sites.values() if site.sandbox}
    assert sandbox == {Side.SINGAPORE: "sg-sandbox-edge", Side.CHONGQING: "cq-sandbox-edge"}
    assert CATALOGUE.telco_for_side(Side.SINGAPORE).id == "sg"
    assert CATALOGUE.side_of_telco("cq") is Side.CHONGQING
    assert CATALOGUE.side_of_telco("xx") is None


def test_catalogue_refuses_a_site_on_the_wrong_telco() -> None:
    data = {
        "telcos": [{"id": "sg", "name": "S", "side": "SINGAPORE"},
                   {"id": "cq", "name": "C", "side": "CHONGQING"}],
        "sites": [{"id": "x", "name": "X", "side": "CHONGQING", "telco": "sg", "city": "c",
                   "router": "r", "platform": "p", "ports": []}],
    }
    with pytest.raises(CatalogueError, match="runs the SINGAPORE side"):
        parse_catalogue(data)


def test_price_book_prices_are_decimals_from_the_data_file() -> None:
    price = PRICES.price(100, 12, "USD")
    assert price.mrc == Decimal("1615.00")
    assert price.nrc == Decimal("1500.00")
    assert price.burst_price_per_mbps == Decimal("14.00")
    assert price.price_book_version == "2026-01"
    assert price.termination_share == Decimal("0.50")
    assert set(PRICES.currencies) >= {"SGD", "CNY", "USD"}
    assert PRICES.terms == (1, 12, 24, 36)


@pytest.mark.parametrize("share", ["1.5", "-0.1", 0.5])
def test_price_book_refuses_a_termination_share_outside_0_to_1(share: object) -> None:
    data = {"version": "v", "terms": [1], "bandwidth_steps_mbps": [10],
            "termination_share": share,
            "currencies": {"USD": {"nrc": "1", "burst_price_per_mbps": "1", "mrc": {"10": ["1"]}}}}
    with pytest.raises(PriceBookError, match="termination_share"):
        parse_price_book(data)


def test_price_book_refuses_float_amounts() -> None:
    data = {"version": "v", "terms": [1], "bandwidth_steps_mbps": [10],
            "currencies": {"USD": {"nrc": 1.5, "burst_price_per_mbps": "1", "mrc": {"10": ["1"]}}}}
    with pytest.raises(PriceBookError, match="decimal strings"):
        parse_price_book(data)


def test_a_good_request_passes_validation() -> None:
    validate_circuit_request(GOOD, CATALOGUE, PRICES, "acme")
    for number in ("PO-2025/0042", "4500012345", "ACME #17 rev.2", "P" * 35):
        validate_circuit_request(replace(GOOD, purchase_order=number), CATALOGUE, PRICES, "acme")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"bandwidth_mbps": -100}, "spec.bandwidth_mbps", "not offered"),
        ({"bandwidth_mbps": 10**12}, "spec.bandwidth_mbps", "not offered"),
        ({"bandwidth_mbps": 10000, "z_end_port_id": "cq-edge-1:GE0/0/1"},
         "spec.bandwidth_mbps", "exceeds the port speed"),
        ({"burst_mbps": -1}, "spec.burst_mbps", "zero or more"),
        ({"term_months": 7}, "spec.term_months", "not offered"),
        ({"currency": "EUR"}, "spec.currency_code", "not offered"),
        ({"a_end_port_id": "cq-edge-1:XGE0/0/2"}, "spec.a_end_port_id", "SINGAPORE"),
        ({"z_end_port_id": "nope"}, "spec.z_end_port_id", "does not exist"),
        ({"a_end_vlan_id": 4095}, "spec.a_end_vlan_id", "outside"),
        ({"description": "x" * 161}, "spec.description", "at most 160"),
        ({"description": "evil<config/>"}, "spec.description", "<, > or &"),
        ({"description": "a]]>b"}, "spec.description", "<, > or &"),
        ({"description": "tab\there"}, "spec.description", "control"),
        ({"description": "caf\u00e9"}, "spec.description", "ASCII"),
        ({"customer_reference": "ref\x00"}, "spec.customer_reference", "control"),
        ({"customer_reference": "r" * 65}, "spec.customer_reference", "at most 64"),
        ({"purchase_order": "P" * 36}, "spec.purchase_order", "at most 35"),
        ({"purchase_order": "ann@acme.example"}, "spec.purchase_order", "purchase-order"),
        ({"purchase_order": "Ann Lee, 1 Main St"}, "spec.purchase_order", "purchase-order"),
        ({"purchase_order": "采购单 12"}, "spec.purchase_order", "purchase-order"),
        ({"purchase_order": "-rm"}, "spec.purchase_order", "starting with"),
        ({"purchase_order": "PO\n1"}, "spec.purchase_order", "purchase-order"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, object], field: str, words: str) -> None:
    found = violations(replace(GOOD, **change))  # type: ignore[arg-type]
    assert words in found[field]


def test_every_problem_is_reported_at_once() -> None:
    found = violations(replace(GOOD, bandwidth_mbps=3, term_months=5, currency="XXX"))
    assert {"spec.bandwidth_mbps", "spec.term_months", "spec.currency_code"} <= set(found)


def test_admission_refuses_what_does_not_fit_and_says_what_is_left() -> None:
    channel = Headroom("the channel", 1000, 600, 300)
    port = Headroom("port p", 10000, 0, 0)
    admit(100, [channel, port])
    with pytest.raises(CapacityExhausted, match="the channel has 100 Mbps free of 1000"):
        admit(200, [channel, port])


def test_a_bandwidth_decrease_reserves_nothing() -> None:
    assert reservation_for_change(500, 200) == 0
    assert reservation_for_change(200, 500) == 300


def test_vlan_allocation_takes_the_wanted_or_the_lowest_free() -> None:
    assert VlanPool("p", 100, 105, {100, 101}).choose(None) == 102
    assert VlanPool("p", 100, 105, set()).choose(104) == 104
    with pytest.raises(CapacityExhausted, match="already in use"):
        VlanPool("p", 100, 105, {104}).choose(104)
    with pytest.raises(CapacityExhausted, match="no free VLAN"):
        VlanPool("p", 100, 101, {100, 101}).choose(None)


def test_vlans_taken_in_a_batch_are_in_use_for_the_next_order() -> None:
    pool = VlanPool("p", 100, 103, {101})
    first = pool.choose(None)
    assert pool.choose(None) == first == 100, "choosing alone takes nothing"
    pool.take(first)
    assert pool.choose(None) == 102
    pool.take(102)
    with pytest.raises(CapacityExhausted, match="already in use"):
        pool.choose(102)
    pool.take(pool.choose(None))
    with pytest.raises(CapacityExhausted, match=r"no free VLAN left in 100\.\.103"):
        pool.choose(None)


def test_a_resource_without_room_is_named_with_what_is_left() -> None:
    port = Headroom("port p", 1000, 300, 600)
    assert port.free_mbps == 100
    with pytest.raises(CapacityExhausted, match="port p has 100 Mbps free"):
        admit(200, [port])


def test_order_state_machine() -> None:
    assert can_transition(OrderState.PENDING_APPROVAL, OrderState.APPROVED)
    assert can_transition(OrderState.APPROVED, OrderState.FAILED)
    assert not can_transition(OrderState.COMPLETED, OrderState.CANCELLED)
    assert not can_transition(OrderState.REJECTED, OrderState.APPROVED)
    check_cancellable(OrderState.PENDING_APPROVAL, "o")
    with pytest.raises(FailedPrecondition, match="provisioning on the routers has started"):
        check_cancellable(OrderState.APPROVED, "o")
    with pytest.raises(FailedPrecondition, match="already CANCELLED"):
        check_cancellable(OrderState.CANCELLED, "o")


def test_circuit_states_follow_the_order() -> None:
    new, change, gone = OrderType.NEW, OrderType.CHANGE, OrderType.DISCONNECT
    assert circuit_state_after(new, Outcome.APPROVED, CircuitState.RESERVED) \
        is CircuitState.PROVISIONING
    assert circuit_state_after(new, Outcome.FAILED, CircuitState.PROVISIONING) \
        is CircuitState.FAILED
    assert circuit_state_after(new, Outcome.WITHDRAWN, CircuitState.RESERVED) \
        is CircuitState.DISCONNECTED
    assert circuit_state_after(change, Outcome.FAILED, CircuitState.MODIFYING) \
        is CircuitState.ACTIVE
    assert circuit_state_after(gone, Outcome.SUCCEEDED, CircuitState.DISCONNECTING) \
        is CircuitState.DISCONNECTED
    assert circuit_state_after(gone, Outcome.WITHDRAWN, CircuitState.ACTIVE) \
        is CircuitState.ACTIVE


SLOTS = {
    Side.SINGAPORE: ApprovalSlot(Side.SINGAPORE, ApprovalState.PENDING, ""),
    Side.CHONGQING: ApprovalSlot(Side.CHONGQING, ApprovalState.PENDING, ""),
}
SG_OPS = Approver("olga@sg", "sg", Side.SINGAPORE)


def decide(approver: Approver = SG_OPS, slots: dict[Side, ApprovalSlot] = SLOTS,
           plan: str | None = "abc", shown: str = "abc", requested_by: str = "alice@acme",
           state: OrderState = OrderState.PENDING_APPROVAL, error: str | None = None) -> bool:
    return decide_approval(state, "o", requested_by, approver, slots, plan, error, shown)


def test_approval_needs_the_current_payload_hash() -> None:
    assert decide() is False
    with pytest.raises(FailedPrecondition, match="not rendered yet"):
        decide(plan=None)
    with pytest.raises(FailedPrecondition, match="current sha256 abc"):
        decide(shown="old")
    with pytest.raises(FailedPrecondition, match="could not be rendered"):
        decide(error="unknown router")


def test_second_approval_completes_and_four_eyes_and_own_telco_hold() -> None:
    slots = {**SLOTS, Side.CHONGQING: ApprovalSlot(Side.CHONGQING, ApprovalState.APPROVED, "z")}
    assert decide(slots=slots) is True
    with pytest.raises(PermissionDenied, match="four-eyes"):
        decide(requested_by="olga@sg")
    with pytest.raises(PermissionDenied, match="runs no side"):
        decide(approver=Approver("x@y", "zz", None))
    twice = {**SLOTS, Side.SINGAPORE: ApprovalSlot(Side.SINGAPORE, ApprovalState.APPROVED, "a")}
    with pytest.raises(FailedPrecondition, match="already approved"):
        decide(slots=twice)
    with pytest.raises(FailedPrecondition, match="not PENDING_APPROVAL"):
        decide(state=OrderState.REJECTED)


def test_a_new_plan_supersedes_approvals_of_other_hashes() -> None:
    slots = {
        Side.SINGAPORE: ApprovalSlot(Side.SINGAPORE, ApprovalState.APPROVED, "a1"),
        Side.CHONGQING: ApprovalSlot(Side.CHONGQING, ApprovalState.APPROVED, "z1"),
    }
    assert superseded_by_plan(slots, {Side.SINGAPORE: "a1", Side.CHONGQING: "z2"}) == [
        Side.CHONGQING
    ]


APPROVED_BOTH = {
    Side.SINGAPORE: ApprovalSlot(Side.SINGAPORE, ApprovalState.APPROVED, "a1"),
    Side.CHONGQING: ApprovalSlot(Side.CHONGQING, ApprovalState.APPROVED, "z1"),
}
APPROVED_PLAN = PlanContent({Side.SINGAPORE: "a1", Side.CHONGQING: "z1"}, None)
CQ_CHANGED = PlanContent({Side.SINGAPORE: "a1", Side.CHONGQING: "z2"}, None)


def on_plan(state: OrderState, new: PlanContent, *, replan: bool = True,
            current: PlanContent = APPROVED_PLAN) -> PlanDecision:
    return decide_plan(state, APPROVED_BOTH, current, new, replan=replan)


@pytest.mark.parametrize("state", [OrderState.APPROVED, OrderState.IN_PROGRESS])
def test_a_replan_sends_an_approved_order_back_superseding_only_the_changed_side(
    state: OrderState,
) -> None:
    assert on_plan(state, CQ_CHANGED) == PlanDecision(
        PlanVerdict.BACK_TO_APPROVAL, (Side.CHONGQING,))
    assert can_transition(state, OrderState.PENDING_APPROVAL)


def test_a_replan_without_payloads_rejects_and_voids_every_approval() -> None:
    decision = on_plan(OrderState.APPROVED, PlanContent({}, "unknown router cq-edge-9"))
    assert decision.verdict is PlanVerdict.REJECT
    assert decision.via_approval
    assert set(decision.superseded) == {Side.SINGAPORE, Side.CHONGQING}
    # The rejection goes through PENDING_APPROVAL; an approved order is never rejected as such.
    assert not can_transition(OrderState.APPROVED, OrderState.REJECTED)


@pytest.mark.parametrize("state", [OrderState.COMPLETED, OrderState.FAILED,
                                   OrderState.CANCELLED, OrderState.REJECTED])
def test_a_replan_of_a_finished_order_is_ignored(state: OrderState) -> None:
    decision = on_plan(state, CQ_CHANGED)
    assert decision.verdict is PlanVerdict.IGNORE
    assert str(state) in decision.why_ignored


def test_a_plan_equal_to_the_recorded_one_changes_nothing() -> None:
    # A second replan event for payloads already recorded: the order is back in approval,
    # or was approved again for exactly these payloads (a stale replan of an earlier saga).
    for state in (OrderState.PENDING_APPROVAL, OrderState.APPROVED):
        decision = on_plan(state, CQ_CHANGED, current=CQ_CHANGED)
        assert decision.verdict is PlanVerdict.IGNORE
        assert "already recorded" in decision.why_ignored
    failed_again = PlanContent({}, "unknown router")
    assert on_plan(OrderState.PENDING_APPROVAL, failed_again, current=failed_again).verdict \
        is PlanVerdict.IGNORE


def test_only_a_replan_reaches_an_order_handed_to_provisioning() -> None:
    decision = on_plan(OrderState.APPROVED, CQ_CHANGED, replan=False)
    assert decision.verdict is PlanVerdict.IGNORE
    assert "only a replan" in decision.why_ignored


def test_a_plan_for_an_order_awaiting_approval_replaces_the_previous_one() -> None:
    assert on_plan(OrderState.PENDING_APPROVAL, CQ_CHANGED, replan=False) == PlanDecision(
        PlanVerdict.REPLACE, (Side.CHONGQING,))


@pytest.mark.parametrize("replan", [False, True])
def test_a_plan_without_payloads_rejects_an_order_awaiting_approval_at_once(
    replan: bool,
) -> None:
    # Nothing could ever be approved: the order must not wait out its approval window.
    decision = on_plan(OrderState.PENDING_APPROVAL, PlanContent({}, "no router"), replan=replan)
    assert decision == PlanDecision(PlanVerdict.REJECT, (Side.SINGAPORE, Side.CHONGQING))
    assert can_transition(OrderState.PENDING_APPROVAL, OrderState.REJECTED)


def test_a_replanned_circuit_goes_back_to_its_state_before_approval() -> None:
    assert circuit_state_after(OrderType.NEW, Outcome.REPLANNED, CircuitState.PROVISIONING) \
        is CircuitState.RESERVED
    assert circuit_state_after(OrderType.CHANGE, Outcome.REPLANNED, CircuitState.MODIFYING) \
        is CircuitState.ACTIVE
    assert circuit_state_after(OrderType.DISCONNECT, Outcome.REPLANNED,
                               CircuitState.DISCONNECTING) is CircuitState.ACTIVE
