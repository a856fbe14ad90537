"""Scheduled and time-boxed bandwidth: the calendar's peak, the window's validation and the
SCHEDULED state; then the use cases on SQLite with a clock the test moves (no broker: the
events are handed to OrderApp as the consumer would)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import order_pb2 as order_events
from idc.events.v1 import provisioning_pb2
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from idc.type.v1 import side_pb2
from services.common.errors import CapacityExhausted, FailedPrecondition, InvalidArgument
from services.common.events.tables import OutboxRow
from services.common.events.topics import ORDER_EVENTS
from services.order import convert
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.convert import timestamp
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.capacity import Headroom
from services.order.domain.catalogue import load_catalogue
from services.order.domain.lifecycle import (
    OrderState,
    after_approval,
    can_transition,
    check_cancellable,
)
from services.order.domain.pricing import boost_charge, load_price_book, started_hours
from services.order.domain.schedule import (
    Calendar,
    Reservation,
    Window,
    check_timeline,
    check_window,
    peak_reserved,
    timeline,
)
from services.order.metrics import _oldest_waiting
from services.order.orders import OrderApp
from services.order.settings import OrderSettings
from tests.unit.order.fakes import SqliteUnitOfWork, record_plan
from tests.unit.order.test_progress import ALICE, CHEN, OLGA, T0, Clock, clock

__all__ = ["clock"]  # the fixture, shared with test_progress.py

S = order_pb2.OrderState
E = TypeVar("E")

H = timedelta(hours=1)
SMALL_A, SMALL_Z = "sg-edge-1:ge-0/0/10", "cq-edge-1:GE0/0/1"  # 1000 Mbps each


# -- the domain ---------------------------------------------------------------------------


def held(mbps: int, start: datetime | None, end: datetime | None) -> Reservation:
    return Reservation(mbps, Window(start, end))


def test_the_peak_is_the_most_held_at_once_over_the_window_not_the_sum() -> None:
    calendar = [held(100, None, None), held(400, T0 + H, T0 + 3 * H),
                held(300, T0 + 3 * H, T0 + 5 * H), held(50, T0 + 4 * H, None)]
    assert peak_reserved(calendar, T0, T0 + H) == 100, "a boost after the window"
    assert peak_reserved(calendar, T0, None) == 500, "for good: the highest point ahead"
    assert peak_reserved(calendar, T0 + 2 * H, T0 + 4 * H) == 500
    assert peak_reserved(calendar, T0 + 3 * H, T0 + 4 * H) == 400, "[start, end): 1 h ends"
    assert peak_reserved([], T0, None) == 0


def test_a_calendar_sums_what_holds_for_good_and_peaks_the_rest_by_port() -> None:
    calendar = Calendar(T0, [("a", "z", held(100, None, None)),
                             ("a", "y", held(400, T0 + H, T0 + 3 * H)),
                             ("b", "z", held(300, T0 + 3 * H, T0 + 5 * H))])
    port = Headroom("port a", 1000, 200, 0)
    assert calendar.at_peak(port, "a", None).reserved_mbps == 500
    assert calendar.at_peak(port, "z", None).reserved_mbps == 400
    assert calendar.at_peak(port, None, None).reserved_mbps == 500, "the pool: 100 + 400"
    calendar.add("a", "y", held(50, None, None))  # admitted for good: every moment from now
    assert calendar.at_peak(port, "a", T0 + H).free_mbps == 1000 - 200 - 150


def test_the_timeline_cuts_where_bookings_start_or_end_and_merges_what_stays() -> None:
    channel = Headroom("the channel", 10_000, 1_000, 0)
    port = Headroom("port p", 1_000, 200, 0)
    held = [("p", "q", Reservation(100, Window(None, None))),
            ("p", "q", Reservation(400, Window(T0 + H, T0 + 3 * H))),
            ("x", "y", Reservation(300, Window(T0 + 3 * H, T0 + 5 * H)))]
    found = timeline(channel, {"p": port}, held, T0, T0 + 4 * H)
    assert [(i.start, i.end, i.channel_free_mbps, dict(i.port_free_mbps)) for i in found] == [
        (T0, T0 + H, 8_900, {"p": 700}),
        (T0 + H, T0 + 3 * H, 8_500, {"p": 300}),
        (T0 + 3 * H, T0 + 4 * H, 8_600, {"p": 700}),
    ]
    quiet = timeline(channel, {"p": port}, held[:1], T0, T0 + 4 * H)
    assert [(i.start, i.end) for i in quiet] == [(T0, T0 + 4 * H)], "nothing changes: one"
    assert check_timeline(None, T0 + H, T0) == T0
    for start, end, field in ((T0 - H, T0 + H, "start_time"), (T0 + H, T0 + H, "end_time"),
                              (None, T0 + timedelta(days=122), "end_time")):
        with pytest.raises(InvalidArgument) as caught:
            check_timeline(start, end, T0)
        assert [v.field for v in caught.value.violations] == [field]


def test_a_window_is_checked_field_by_field() -> None:
    assert check_window(T0 + H, T0 + 3 * H, T0, 100, 200) == Window(T0 + H, T0 + 3 * H)
    assert check_window(T0 + H, None, T0, 200, 100) == Window(T0 + H, None), \
        "a scheduled lasting change may lower the bandwidth"
    cases = [
        ((None, T0 + H, 100, 200), "start_time", "needs a start_time"),
        ((T0 - H, None, 100, 200), "start_time", "in the past"),
        ((T0 + timedelta(days=91), None, 100, 200), "start_time", "at most 90 days"),
        ((T0 + H, T0 + H + timedelta(minutes=59), 100, 200), "end_time", "at least 1 hour"),
        ((T0 + H, T0 + timedelta(days=32), 100, 200), "end_time", "at most 31 days"),
        ((T0 + H, T0 + 3 * H, 200, 100), "bandwidth_mbps", "raises the bandwidth"),
    ]
    for (start, end, current, wanted), field, words in cases:
        with pytest.raises(InvalidArgument) as caught:
            check_window(start, end, T0, current, wanted)
        assert [v.field for v in caught.value.violations] == [field]
        assert words in caught.value.violations[0].description


def test_a_scheduled_order_waits_and_is_cancellable_only_before_its_start() -> None:
    assert can_transition(OrderState.PENDING_APPROVAL, OrderState.SCHEDULED)
    for target in (OrderState.APPROVED, OrderState.CANCELLED, OrderState.FAILED):
        assert can_transition(OrderState.SCHEDULED, target)
    for target in (OrderState.IN_PROGRESS, OrderState.COMPLETED, OrderState.REJECTED,
                   OrderState.PENDING_APPROVAL):
        assert not can_transition(OrderState.SCHEDULED, target)
    assert not OrderState.SCHEDULED.terminal
    assert after_approval(T0 + H, T0) is OrderState.SCHEDULED
    assert after_approval(T0, T0) is OrderState.APPROVED
    assert after_approval(None, T0) is OrderState.APPROVED
    check_cancellable(OrderState.SCHEDULED, "o", starts_at=T0 + H, moment=T0)
    with pytest.raises(FailedPrecondition, match="no longer be cancelled"):
        check_cancellable(OrderState.SCHEDULED, "o", starts_at=T0, moment=T0)
    with pytest.raises(FailedPrecondition, match="cancel the boost ord-b"):
        check_cancellable(OrderState.PENDING_APPROVAL, "o", boost_order_id="ord-b")


def test_a_boost_is_billed_per_started_hour_on_the_added_bandwidth() -> None:
    assert started_hours(T0, T0 + H + timedelta(seconds=1)) == 2
    assert boost_charge(Decimal("0.04"), 400, T0, T0 + 2 * H) == Decimal("32.00")


# -- the use cases on SQLite --------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Iterator[OrderApp]:
    uow = SqliteUnitOfWork(tmp_path)
    yield OrderApp(uow, load_catalogue(), load_price_book(), OrderSettings(), clock=clock,
                   contacts=ContactVault(ContactCipher(ContactKeySet.generate()),
                                         billing_telcos(load_catalogue())))
    uow.close()


def plan(app: OrderApp, order: order_pb2.Order, tag: str) -> tuple[str, str]:
    hashes = (f"a-{tag}", f"z-{tag}")
    record_plan(app, order.id, order.circuit_id, hashes)
    return hashes


def active_circuit(app: OrderApp, bandwidth: int = 100, name: str = "c") -> str:
    order = app.placing.create_order(ALICE, order_service_pb2.CreateOrderRequest(
        request_id=f"new-{name}", spec=circuit_pb2.CircuitSpec(
            a_end_port_id=SMALL_A, z_end_port_id=SMALL_Z, bandwidth_mbps=bandwidth,
            term_months=12, currency_code="SGD")))
    a, z = plan(app, order, order.id)
    app.approving.approve(OLGA, order.id, a, "")
    app.approving.approve(CHEN, order.id, z, "")
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitActivated(
            order_id=order.id, circuit_id=order.circuit_id))
    return order.circuit_id


def boost(app: OrderApp, circuit_id: str, bandwidth: int, start: datetime, end: datetime | None,
          request_id: str = "boost") -> order_pb2.Order:
    request = order_service_pb2.ModifyBandwidthRequest(
        request_id=request_id, circuit_id=circuit_id, bandwidth_mbps=bandwidth,
        start_time=timestamp(start))
    if end is not None:
        request.end_time.CopyFrom(timestamp(end))
    return app.changing.modify_bandwidth(ALICE, request)


def get(app: OrderApp, order_id: str) -> order_pb2.Order:
    with app.uow.read() as session:
        return convert.order_by_id(session, order_id, None)


def events(app: OrderApp, circuit_id: str, kind: type[E]) -> list[E]:
    with app.uow.read() as session:
        rows = session.scalars(select(OutboxRow).where(
            OutboxRow.topic == ORDER_EVENTS, OutboxRow.key == circuit_id.encode(),
            OutboxRow.event_type == kind.DESCRIPTOR.full_name)  # type: ignore[attr-defined]
            .order_by(OutboxRow.id))
        return [kind.FromString(row.payload) for row in rows]  # type: ignore[attr-defined]


def approve_pair(app: OrderApp, booked: order_pb2.Order) -> None:
    a, z = plan(app, booked, "boost")
    ra, rz = plan(app, get(app, booked.revert_order_id), "revert")
    app.approving.approve(OLGA, booked.id, a, "", ra)
    app.approving.approve(CHEN, booked.id, z, "", rz)


def approved_boost(app: OrderApp) -> tuple[str, order_pb2.Order]:
    """An active 100 Mbps circuit and a boost of it to 500 Mbps for [T0+1h, T0+3h),
    approved by both telcos (SCHEDULED)."""
    circuit_id = active_circuit(app)
    booked = boost(app, circuit_id, 500, T0 + H, T0 + 3 * H)
    approve_pair(app, booked)
    return circuit_id, booked


def test_a_boost_is_booked_approved_once_started_and_reverted_on_the_clock(
    app: OrderApp, clock: Clock,
) -> None:
    circuit_id = active_circuit(app)
    booked = boost(app, circuit_id, 500, T0 + H, T0 + 3 * H)
    revert = get(app, booked.revert_order_id)
    assert (booked.state, revert.state) == (S.ORDER_STATE_PENDING_APPROVAL,) * 2
    assert (revert.boost_order_id, revert.spec.bandwidth_mbps,
            revert.start_time.ToDatetime(tzinfo=UTC)) == (booked.id, 100, T0 + 3 * H)
    base_mrc = app.context.price_book.price(100, 12, "SGD").mrc
    assert booked.price.mrc.amount == str(base_mrc), "a boost keeps the contract's MRC"
    assert (booked.price.boost_price_per_mbps_hour.amount,
            booked.price.boost_estimated_charge.amount) == ("0.04", "32.00")  # 400 * 2 h
    assert booked.approvals[0].expire_time.ToDatetime(tzinfo=UTC) == T0 + H, \
        "both telcos approve before the start"

    a, _ = plan(app, booked, "boost")
    ra, rz = plan(app, revert, "revert")
    with pytest.raises(InvalidArgument, match="revert_payload_sha256"):
        app.approving.approve(OLGA, booked.id, a, "")
    with pytest.raises(FailedPrecondition, match="approve the boost"):
        app.approving.approve(OLGA, revert.id, ra, "")
    with pytest.raises(FailedPrecondition, match="has changed since you reviewed it"):
        app.approving.approve(OLGA, booked.id, a, "", "stale")
    approve_pair(app, booked)
    assert {a.side: a.revert_payload_sha256 for a in get(app, booked.id).approvals} == {
        side_pb2.SIDE_SINGAPORE: ra, side_pb2.SIDE_CHONGQING: rz}
    assert (get(app, booked.id).state, get(app, revert.id).state) == (S.ORDER_STATE_SCHEDULED,) * 2
    assert app.approving.start_due() == 0 and events(app, circuit_id, order_events.OrderApproved) \
        and len(events(app, circuit_id, order_events.OrderApproved)) == 1, "only the NEW one"

    clock.now = T0 + H
    assert app.approving.start_due() == 1, "the boost starts; the revert is not due"
    raised = events(app, circuit_id, order_events.OrderApproved)[-1]
    assert (raised.order_id, raised.circuit.bandwidth_mbps, raised.boost.revert,
            raised.boost.boost_id, raised.boost.base_bandwidth_mbps,
            raised.boost.boosted_bandwidth_mbps) == (booked.id, 500, False, booked.id, 100, 500)
    assert raised.price.mrc.amount == str(base_mrc)
    assert raised.price.boost_price_per_mbps_hour.amount == "0.04"
    with pytest.raises(FailedPrecondition, match="no longer be cancelled"):
        app.changing.cancel(ALICE, booked.id, "")
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitModified(
            order_id=booked.id, circuit_id=circuit_id, bandwidth_mbps=500))
    assert get(app, booked.id).state == S.ORDER_STATE_COMPLETED
    with app.uow.read() as session:
        circuit = convert.circuit(app.catalogue, convert.store.get_circuit(
            session, circuit_id, None))
    assert (circuit.bandwidth_mbps, circuit.pending_order_id) == (500, revert.id)

    clock.now = T0 + 3 * H
    assert app.approving.start_due() == 1
    reverted = events(app, circuit_id, order_events.OrderApproved)[-1]
    assert (reverted.order_id, reverted.circuit.bandwidth_mbps,
            reverted.previous_circuit.bandwidth_mbps, reverted.boost.revert,
            reverted.boost.boost_id) == (revert.id, 100, 500, True, booked.id)
    assert reverted.boost.end_time.ToDatetime(tzinfo=UTC) == T0 + 3 * H
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitModified(
            order_id=revert.id, circuit_id=circuit_id, bandwidth_mbps=100))
    assert get(app, revert.id).state == S.ORDER_STATE_COMPLETED


def test_cancelling_a_scheduled_boost_cancels_its_revert_and_frees_the_window(
    app: OrderApp,
) -> None:
    circuit_id = active_circuit(app)
    booked = boost(app, circuit_id, 1000, T0 + H, T0 + 3 * H)
    with pytest.raises(CapacityExhausted, match="port sg-edge-1:ge-0/0/10"):
        active_circuit(app, 10, "late")
    approve_pair(app, booked)
    with pytest.raises(FailedPrecondition, match="cancel the boost"):
        app.changing.cancel(ALICE, booked.revert_order_id, "")
    cancelled = app.changing.cancel(ALICE, booked.id, "plans changed")
    assert cancelled.state == S.ORDER_STATE_CANCELLED
    assert get(app, booked.revert_order_id).state == S.ORDER_STATE_CANCELLED
    assert active_circuit(app, 10, "late"), "the window is free again"


def test_admission_reads_the_peak_over_the_window_of_a_scheduled_order(app: OrderApp) -> None:
    first, second, third = (active_circuit(app, 100, name) for name in "abc")
    boost(app, first, 500, T0 + H, T0 + 3 * H, "b1")  # 300 committed + 400 in [1 h, 3 h)
    with pytest.raises(CapacityExhausted, match="ge-0/0/10 has 300 Mbps free"):
        boost(app, second, 500, T0 + 2 * H, T0 + 4 * H, "b2")
    after = boost(app, second, 500, T0 + 3 * H, T0 + 5 * H, "b3")
    assert after.state == S.ORDER_STATE_PENDING_APPROVAL, "back to back: no overlap"
    # An immediate lasting change holds from now on, for good: it sees the peak of both
    # future boosts (400 at once), not their sum (800).
    with pytest.raises(CapacityExhausted, match="ge-0/0/10 has 300 Mbps free"):
        app.changing.modify_bandwidth(ALICE, order_service_pb2.ModifyBandwidthRequest(
            request_id="too-much", circuit_id=third, bandwidth_mbps=500))
    now = app.changing.modify_bandwidth(ALICE, order_service_pb2.ModifyBandwidthRequest(
        request_id="now", circuit_id=third, bandwidth_mbps=200))
    assert now.state == S.ORDER_STATE_PENDING_APPROVAL
    with pytest.raises(FailedPrecondition, match=f"already has order {after.id}"):
        boost(app, second, 200, T0 + 6 * H, None, "another")


def test_a_revert_is_rejected_only_with_its_boost_and_a_rehearsal_names_no_order(
    app: OrderApp,
) -> None:
    circuit_id = active_circuit(app)
    rehearsed = app.changing.modify_bandwidth(ALICE, order_service_pb2.ModifyBandwidthRequest(
        request_id="try", circuit_id=circuit_id, bandwidth_mbps=500, validate_only=True,
        start_time=timestamp(T0 + H), end_time=timestamp(T0 + 2 * H)))
    assert (rehearsed.id, rehearsed.revert_order_id) == ("", "")
    booked = boost(app, circuit_id, 500, T0 + H, T0 + 3 * H)
    with pytest.raises(FailedPrecondition, match="reject the boost"):
        app.approving.reject(OLGA, booked.revert_order_id, "no")
    assert app.approving.reject(OLGA, booked.id, "not now").state == S.ORDER_STATE_REJECTED
    assert get(app, booked.revert_order_id).state == S.ORDER_STATE_CANCELLED


def test_a_start_that_cannot_happen_fails_and_tells_the_customer(
    app: OrderApp, clock: Clock,
) -> None:
    circuit_id, booked = approved_boost(app)
    with app.uow.write() as session:  # not a state a circuit with a scheduled order reaches
        convert.store.get_circuit(session, circuit_id, None).state = "DISCONNECTING"
    clock.now = T0 + H
    assert app.approving.start_due() == 1
    failed = get(app, booked.id)
    assert failed.state == S.ORDER_STATE_FAILED
    assert "could not happen: circuit" in failed.failure.message
    assert failed.audit_trail[-1].actor == "system:scheduler"
    assert get(app, booked.revert_order_id).state == S.ORDER_STATE_CANCELLED
    [told] = events(app, circuit_id, order_events.OrderCompleted)[-1:]
    assert (told.order_id, told.success) == (booked.id, False)


def revert_due(app: OrderApp, clock: Clock) -> tuple[str, order_pb2.Order]:
    """An approved boost in force, and at its end its revert handed to provisioning."""
    circuit_id, booked = approved_boost(app)
    clock.now = T0 + H
    app.approving.start_due()
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitModified(
            order_id=booked.id, circuit_id=circuit_id, bandwidth_mbps=500))
    clock.now = T0 + 3 * H
    assert app.approving.start_due() == 1
    return circuit_id, booked


def test_a_revert_whose_payload_changed_goes_back_to_approval_and_then_starts(
    app: OrderApp, clock: Clock,
) -> None:
    circuit_id, booked = revert_due(app, clock)
    revert = get(app, booked.revert_order_id)
    record_plan(app, revert.id, circuit_id, ("a-new", "z-new"), replan=True, reason="template")
    assert get(app, revert.id).state == S.ORDER_STATE_PENDING_APPROVAL
    app.approving.approve(OLGA, revert.id, "a-new", "")
    assert app.approving.approve(CHEN, revert.id, "z-new", "").state == S.ORDER_STATE_SCHEDULED
    assert app.approving.start_due() == 1
    assert get(app, revert.id).state == S.ORDER_STATE_APPROVED


def test_a_scheduled_order_not_started_past_the_bound_is_alarmed(
    app: OrderApp, clock: Clock,
) -> None:
    _, booked = approved_boost(app)
    clock.now = T0 + H + timedelta(minutes=14)
    assert app.outcomes.overdue() == []
    clock.now = T0 + H + timedelta(minutes=16)
    assert app.outcomes.overdue() == [
        f"order {booked.id} was due to start 16 min ago and is still SCHEDULED (its boost is "
        "not in force yet, or scheduled starts are not running)"]
    app.approving.start_due()
    assert app.outcomes.overdue() == [], "handed over: the provisioning bound counts anew"


def test_the_oldest_scheduled_order_is_as_old_as_it_is_past_its_start(
    app: OrderApp, clock: Clock,
) -> None:
    approved_boost(app)
    factory = sessionmaker(app.uow.engine)  # type: ignore[attr-defined]

    def scheduled_age() -> float:
        [reading] = [r for r in _oldest_waiting(factory, clock)
                     if r.attributes == {"state": "SCHEDULED"}]
        return reading.value

    assert scheduled_age() == 0, "waiting for its start is no delay"
    clock.now = T0 + H + timedelta(minutes=16)
    assert scheduled_age() == 16 * 60


def test_a_boost_late_past_its_end_still_holds_its_bandwidth(
    app: OrderApp, clock: Clock,
) -> None:
    first, second, _ = (active_circuit(app, 100, name) for name in "abc")
    late = boost(app, first, 500, T0 + H, T0 + 3 * H, "late")
    approve_pair(app, late)
    clock.now = T0 + H
    app.approving.start_due()  # handed to provisioning, which has not answered yet
    clock.now = T0 + 4 * H
    with pytest.raises(CapacityExhausted, match="ge-0/0/10 has 300 Mbps free"):
        boost(app, second, 500, T0 + 5 * H, T0 + 6 * H, "after")
    [interval] = app.capacity_timeline([SMALL_A], None, T0 + 6 * H, sandbox=False)
    assert interval.port_free_mbps == {SMALL_A: 300}


def test_a_revert_back_in_approval_never_expires_and_is_told_again_each_window(
    app: OrderApp, clock: Clock,
) -> None:
    circuit_id, booked = revert_due(app, clock)
    revert_id = booked.revert_order_id
    with app.uow.write() as session:
        app.outcomes.record_plan(session, provisioning_pb2.ProvisioningPlanned(
            order_id=revert_id, circuit_id=circuit_id, replan=True, reason="template"))
    [told] = events(app, circuit_id, order_events.OrderAwaitingApproval)
    assert (told.order_id, told.boost_order_id) == (revert_id, booked.id)
    window = timedelta(seconds=OrderSettings().approval_window_s)
    assert told.approval_expire_time.ToDatetime(tzinfo=UTC) == T0 + 3 * H + window
    clock.now = T0 + 3 * H + window
    assert app.approving.expire_due() == 1
    revert = get(app, revert_id)
    assert revert.state == S.ORDER_STATE_PENDING_APPROVAL, "a revert does not expire"
    assert "a revert does not expire" in revert.audit_trail[-1].reason
    again = events(app, circuit_id, order_events.OrderAwaitingApproval)
    assert [e.approval_expire_time.ToDatetime(tzinfo=UTC) for e in again] == [
        T0 + 3 * H + window, T0 + 3 * H + 2 * window]
    assert app.outcomes.overdue()[0].startswith(f"revert {revert_id} was due 72 h 0 min ago")


def test_a_new_circuit_fits_beside_boosts_that_never_overlap(app: OrderApp) -> None:
    first, second = (active_circuit(app, 100, name) for name in "ab")
    boost(app, first, 500, T0 + H, T0 + 3 * H, "b1")  # 200 committed + 400 in [1 h, 3 h)
    boost(app, second, 500, T0 + 3 * H, T0 + 5 * H, "b2")  # + 400 in [3 h, 5 h)
    # The sum (800) would leave 0 Mbps; the peak (400) leaves 400 for good.
    assert active_circuit(app, 200, "fits")
    with pytest.raises(CapacityExhausted, match="ge-0/0/10 has 200 Mbps free"):
        active_circuit(app, 500, "full")
