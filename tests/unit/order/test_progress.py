"""An order with provisioning: IN_PROGRESS from the first step reported, the last step shown,
outcomes and replans from IN_PROGRESS as from APPROVED, and the alarm for orders overdue.

The domain decisions alone, then the use cases on a SQLite file (no broker: the events are
handed to OrderApp as the consumer would)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idc.events.v1 import circuit_pb2 as circuit_events
from idc.events.v1 import provisioning_pb2
from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from idc.type.v1 import router_payload_pb2, side_pb2
from services.common.auth import Principal, Role
from services.common.config import ConfigError
from services.common.errors import FailedPrecondition
from services.order import convert
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.convert import timestamp
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.catalogue import load_catalogue
from services.order.domain.lifecycle import (
    OrderState,
    ProgressDecision,
    ProgressVerdict,
    can_transition,
    check_cancellable,
    decide_progress,
)
from services.order.domain.overdue import AwaitingOutcome, overdue_report, waited_words
from services.order.domain.pricing import load_price_book
from services.order.orders import OrderApp
from services.order.settings import OrderSettings
from services.order.workers import OVERDUE_ALARM, OverdueProvisioningWorker
from tests.unit.order.fakes import SqliteUnitOfWork

S = order_pb2.OrderState
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


# -- the domain ---------------------------------------------------------------------------


def test_the_first_step_starts_an_approved_order_and_later_ones_only_record() -> None:
    assert decide_progress(OrderState.APPROVED).verdict is ProgressVerdict.START
    assert decide_progress(OrderState.IN_PROGRESS).verdict is ProgressVerdict.STEP
    assert can_transition(OrderState.APPROVED, OrderState.IN_PROGRESS)
    for end in (OrderState.COMPLETED, OrderState.FAILED, OrderState.PENDING_APPROVAL):
        assert can_transition(OrderState.IN_PROGRESS, end)
    assert not can_transition(OrderState.IN_PROGRESS, OrderState.CANCELLED)
    with pytest.raises(FailedPrecondition, match="can no longer be cancelled"):
        check_cancellable(OrderState.IN_PROGRESS, "o")


@pytest.mark.parametrize("state", [OrderState.PENDING_APPROVAL, OrderState.COMPLETED,
                                   OrderState.FAILED, OrderState.REJECTED,
                                   OrderState.CANCELLED, OrderState.ACKNOWLEDGED])
def test_a_step_for_an_order_not_with_provisioning_is_late_and_ignored(
    state: OrderState,
) -> None:
    assert decide_progress(state) == ProgressDecision(
        ProgressVerdict.IGNORE, f"the order is {state}, not with provisioning")


def waiting(order_id: str, minutes: float, state: OrderState = OrderState.IN_PROGRESS,
            step: str | None = "preparing") -> AwaitingOutcome:
    approved = T0 - timedelta(minutes=minutes)
    return AwaitingOutcome(order_id, state, approved, step,
                           approved + timedelta(seconds=1) if step else None)


def test_the_overdue_report_names_each_order_its_wait_and_its_last_step() -> None:
    orders = [waiting("ord-b", 16), waiting("ord-a", 61, OrderState.APPROVED, step=None),
              waiting("ord-fresh", 14), waiting("ord-done", 30, OrderState.COMPLETED)]
    assert overdue_report(orders, T0, 900, more=False) == [
        "order ord-a has waited 61 min since approval without an outcome (APPROVED, no "
        "provisioning step reported yet)",
        "order ord-b has waited 16 min since approval without an outcome (IN_PROGRESS, last "
        "step 'preparing' since 2026-12-02T09:44:01+00:00)",
    ]
    assert overdue_report([], T0, 900, more=False) == []
    assert overdue_report(orders[:1], T0, 900, more=True)[-1] \
        == "more orders have waited longer than 900 s than are listed here"


def test_the_wait_is_worded_coarsely_so_the_alarm_text_changes_rarely() -> None:
    assert waited_words(timedelta(seconds=7.9)) == "7 s"
    assert waited_words(timedelta(seconds=119)) == "119 s"
    assert waited_words(timedelta(seconds=120)) == "2 min"
    assert waited_words(timedelta(seconds=7199)) == "119 min"
    assert waited_words(timedelta(hours=26, minutes=5, seconds=59)) == "26 h 5 min"


def test_the_alarm_bound_comes_from_the_environment_and_is_checked() -> None:
    assert OrderSettings.from_env({}).provisioning_alarm_s == 900
    assert OrderSettings.from_env(
        {"IDC_ORDER_PROVISIONING_ALARM_S": "30"}).provisioning_alarm_s == 30
    for bad in ("0", "-5", "soon"):
        with pytest.raises(ConfigError, match="IDC_ORDER_PROVISIONING_ALARM_S"):
            OrderSettings.from_env({"IDC_ORDER_PROVISIONING_ALARM_S": bad})


class Source:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.broken = False

    def overdue(self) -> list[str]:
        if self.broken:
            raise RuntimeError("database gone")
        return list(self.texts)


def test_the_worker_raises_the_alarm_with_the_texts_and_when_it_cannot_check() -> None:
    source = Source()
    worker = OverdueProvisioningWorker(source, 1.0)
    check = worker.alarms()[OVERDUE_ALARM]
    worker.run_once()
    assert list(check()) == []
    source.texts = ["order ord-a has waited 16 min"]
    worker.run_once()
    assert list(check()) == ["order ord-a has waited 16 min"]
    source.broken = True
    worker.run_once()
    assert list(check()) == ["cannot check for orders overdue with provisioning: "
                             "RuntimeError: database gone"]


# -- the use cases on SQLite --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


ALICE = Principal("alice@acme", Role.CUSTOMER, tenant="acme")
OLGA = Principal("olga@sg", Role.OPS, telco="sg")
CHEN = Principal("chen@cq", Role.OPS, telco="cq")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Iterator[OrderApp]:
    uow = SqliteUnitOfWork(tmp_path)
    yield OrderApp(uow, load_catalogue(), load_price_book(),
                   OrderSettings(provisioning_alarm_s=600), clock=clock,
                   contacts=ContactVault(ContactCipher(ContactKeySet.generate()),
                                         billing_telcos(load_catalogue())))
    uow.close()


def approved_order(app: OrderApp, bandwidth: int = 100) -> order_pb2.Order:
    order = app.placing.create_order(ALICE, order_service_pb2.CreateOrderRequest(
        request_id=f"r-{bandwidth}", spec=circuit_pb2.CircuitSpec(
            a_end_port_id="sg-edge-1:xe-0/0/1", z_end_port_id="cq-edge-1:XGE0/0/1",
            bandwidth_mbps=bandwidth, term_months=12, currency_code="SGD")))
    plan = provisioning_pb2.ProvisioningPlanned(
        order_id=order.id, circuit_id=order.circuit_id, payloads=[
            router_payload_pb2.RouterPayload(side=side, sha256=sha)
            for side, sha in ((side_pb2.SIDE_SINGAPORE, "a1"), (side_pb2.SIDE_CHONGQING, "z1"))])
    with app.uow.write() as session:
        app.outcomes.record_plan(session, plan)
    app.approving.approve(OLGA, order.id, "a1", "")
    approved = app.approving.approve(CHEN, order.id, "z1", "")
    assert approved.state == S.ORDER_STATE_APPROVED
    return approved


def progress(app: OrderApp, order: order_pb2.Order, step: str, at: datetime) -> order_pb2.Order:
    with app.uow.write() as session:
        app.outcomes.record_progress(session, provisioning_pb2.ProvisioningProgress(
            order_id=order.id, circuit_id=order.circuit_id, saga_id="saga-1", step=step,
            occurred_at=timestamp(at)))
    return get(app, order.id)


def get(app: OrderApp, order_id: str) -> order_pb2.Order:
    with app.uow.read() as session:
        return convert.order_by_id(session, order_id, None)


def test_an_approved_order_is_in_progress_from_the_first_step_and_shows_the_last(
    app: OrderApp, clock: Clock,
) -> None:
    order = approved_order(app)
    started = progress(app, order, "preparing", T0 + timedelta(seconds=1))
    assert started.state == S.ORDER_STATE_IN_PROGRESS
    assert (started.provisioning_step, started.provisioning_step_time.ToDatetime(tzinfo=UTC)) \
        == ("preparing", T0 + timedelta(seconds=1))
    entry = started.audit_trail[-1]
    assert (entry.from_state, entry.to_state, entry.actor, entry.reason) == (
        S.ORDER_STATE_APPROVED, S.ORDER_STATE_IN_PROGRESS, "system:provisioning",
        "provisioning started on the routers (step 'preparing')")

    later = progress(app, order, "confirming", T0 + timedelta(seconds=2))
    assert (later.state, later.provisioning_step) \
        == (S.ORDER_STATE_IN_PROGRESS, "confirming")
    assert len(later.audit_trail) == len(started.audit_trail), "a step is not a transition"

    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitActivated(
            order_id=order.id, circuit_id=order.circuit_id))
    done = get(app, order.id)
    assert (done.state, done.audit_trail[-1].from_state) \
        == (S.ORDER_STATE_COMPLETED, S.ORDER_STATE_IN_PROGRESS)
    assert done.provisioning_step == "confirming", "the last step known stays"
    # A late report changes nothing.
    assert progress(app, order, "preparing", T0 + timedelta(seconds=3)) == done


def test_an_order_in_progress_fails_or_goes_back_to_approval_as_an_approved_one(
    app: OrderApp,
) -> None:
    failing = approved_order(app, 100)
    progress(app, failing, "rolling-back", T0)
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.ProvisioningFailed(
            order_id=failing.id, circuit_id=failing.circuit_id, message="refused"))
    assert get(app, failing.id).state == S.ORDER_STATE_FAILED

    replanned = approved_order(app, 200)
    progress(app, replanned, "preparing", T0)
    with app.uow.write() as session:
        app.outcomes.record_plan(session, provisioning_pb2.ProvisioningPlanned(
            order_id=replanned.id, circuit_id=replanned.circuit_id, replan=True,
            reason="sg-edge-1: payload changed", payloads=[
                router_payload_pb2.RouterPayload(side=side_pb2.SIDE_SINGAPORE, sha256="a2"),
                router_payload_pb2.RouterPayload(side=side_pb2.SIDE_CHONGQING, sha256="z1")]))
    back = get(app, replanned.id)
    assert (back.state, back.audit_trail[-1].from_state) \
        == (S.ORDER_STATE_PENDING_APPROVAL, S.ORDER_STATE_IN_PROGRESS)
    assert back.provisioning_step == "" and not back.HasField("provisioning_step_time")


def test_orders_with_provisioning_past_the_bound_are_reported(
    app: OrderApp, clock: Clock,
) -> None:
    quiet = approved_order(app, 100)  # provisioning never reported a step
    clock.now = T0 + timedelta(minutes=5)
    busy = approved_order(app, 200)
    progress(app, busy, "waiting-to-retry", T0 + timedelta(minutes=6))
    clock.now = T0 + timedelta(minutes=9)
    assert app.outcomes.overdue() == []
    clock.now = T0 + timedelta(minutes=12)
    assert app.outcomes.overdue() == [
        f"order {quiet.id} has waited 12 min since approval without an outcome (APPROVED, "
        "no provisioning step reported yet)"]
    clock.now = T0 + timedelta(minutes=16)
    assert app.outcomes.overdue(limit=1) == [
        f"order {quiet.id} has waited 16 min since approval without an outcome (APPROVED, "
        "no provisioning step reported yet)",
        "more orders have waited longer than 600 s than are listed here"]
    assert app.outcomes.overdue()[1].startswith(f"order {busy.id} has waited 11 min")
    assert ("last step 'waiting-to-retry' since 2026-12-02T10:06:00+00:00"
            in app.outcomes.overdue()[1])
    with app.uow.write() as session:
        app.outcomes.record_outcome(session, circuit_events.CircuitActivated(
            order_id=quiet.id, circuit_id=quiet.circuit_id))
    assert [text.split()[1] for text in app.outcomes.overdue()] == [busy.id]
