"""The router agent's every step against every fault, on the in-memory router.

Each test drives a RouterWorker (its real queue, batches and replies on SQLite) against a
FakeRouter told to fail one step one way: no answer before or after the router applied
it, a session dropped before or after, or an rpc-error. Whatever happens, once the router
answers again, every reply and every stored batch must say what the router holds: a
PREPARE answered success has its circuit in a pending commit under the reply's persist
id; any other answer leaves the circuit out of running and no commit pending; a CONFIRM
answered success leaves it in running for good, nothing pending.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import provisioning_pb2
from services.provisioning.agent.jobs import CONFIRM, PREPARE, ROLLBACK
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.domain.batch import Batch, BatchState, MemberState
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.inventory import Device
from services.provisioning.rendering import Renderer
from services.provisioning.tables import AgentBatch, AgentCommand
from tests.integration.provisioning.helpers import circuit, command, enqueue, replies
from tests.unit.provisioning.fake_router import FakeRouter, Fault, Step

DEVICE = Device(
    name="sg-edge-1",
    telco="sg",
    site="sg-site-1",
    vendor="openconfig",
    platform="openconfig",
    host="127.0.0.1",
    port=830,
    username="agent",
    key_path=Path("/nonexistent/key"),
    known_hosts_path=Path("/nonexistent/known_hosts"),
)
KEY = ("xe-0/0/1", 100)
# No answer (before or after the router applied the step), dropped, or refused.
FAULTS = list(Fault)
PREPARE_STEPS = [Step.LOCK, Step.DISCARD, Step.EDIT, Step.CONFIRMED_COMMIT, Step.GET_CONFIG]
CONFIRM_STEPS = [Step.CONFIRM, Step.GET_CONFIG, Step.DISCARD, Step.UNLOCK]
ROLLBACK_STEPS = [Step.CANCEL, Step.GET_CONFIG, Step.DISCARD, Step.UNLOCK]


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter("openconfig", name=DEVICE.name)


@pytest.fixture
def worker(router: FakeRouter, factory: sessionmaker[Session]) -> RouterWorker:
    return RouterWorker(DEVICE, router.session(), factory, Renderer(), "replies")


def drive(worker: RouterWorker, until: Callable[[], bool], rounds: int = 60) -> None:
    """Run the worker until ``until`` holds (a bounded number of rounds: no clock)."""
    for _ in range(rounds):
        worker.run_once()
        if until():
            return
    raise AssertionError("the worker did not get there")


def answers(worker: RouterWorker, count: int) -> list[provisioning_pb2.ProvisioningReply]:
    drive(worker, lambda: len(replies(worker.session_factory)) >= count)
    found = replies(worker.session_factory)
    assert len(found) == count, [(r.action, r.success) for r in found]
    return found


def batches(worker: RouterWorker) -> list[Batch]:
    with worker.session_factory() as db:
        rows = db.scalars(select(AgentBatch).order_by(AgentBatch.created_at)).all()
        return [
            Batch.from_json(r.persist_id, r.router_name, r.state, r.expire_at, r.members)
            for r in rows
        ]


def queued(worker: RouterWorker) -> int:
    with worker.session_factory() as db:
        return len(db.scalars(select(AgentCommand).where(AgentCommand.done_at.is_(None))).all())


def assert_records_match_the_router(worker: RouterWorker, router: FakeRouter) -> None:
    """No batch waits to be settled; the newest batch of each circuit says what running
    holds; the open one (at most one) is the router's pending commit."""
    running = router.subinterfaces()
    pending = router.pending
    newer: set[str] = set()
    for batch in reversed(batches(worker)):
        assert batch.settle is None, f"batch {batch.persist_id} still to be settled"
        if batch.state is BatchState.OPEN:
            assert pending is not None and pending.persist_id == batch.persist_id
            newer |= set(batch.members)
            continue
        for circuit_id, member in batch.members.items():
            if circuit_id in newer:
                continue
            newer.add(circuit_id)
            in_running = member.applied_in(running)
            if member.state in (MemberState.COMMITTED, MemberState.CONFIRMED):
                assert in_running, f"{batch.persist_id}: {member.state} but not in running"
            else:
                assert member.state is MemberState.REVERTED
                assert not in_running or member.after == member.before
    if pending is not None:
        assert any(b.persist_id == pending.persist_id and b.is_open for b in batches(worker))


def prepare(worker: RouterWorker) -> provisioning_pb2.ProvisioningReply:
    enqueue(worker.session_factory, command(DEVICE, PREPARE, circuit(100, circuit_id="CKT-1")))
    [prepared] = answers(worker, 1)
    return prepared


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
@pytest.mark.parametrize("step", PREPARE_STEPS, ids=lambda s: s.name)
def test_a_fault_in_a_prepare_is_answered_as_the_router_holds_it(
    worker: RouterWorker, router: FakeRouter, step: Step, fault: Fault
) -> None:
    router.fail_next(step, fault)
    prepared = prepare(worker)
    pending = router.pending
    if prepared.success:
        assert pending is not None and pending.persist_id == prepared.persist_id
        assert KEY in router.subinterfaces()
    else:
        assert pending is None, "a failed prepare left a commit pending"
        assert KEY not in router.subinterfaces()
    assert_records_match_the_router(worker, router)
    assert queued(worker) == 0
    assert not router.unused_faults(), "the fault was never met"


def test_a_commit_that_landed_unanswered_is_cancelled_and_prepared_again(
    worker: RouterWorker, router: FakeRouter
) -> None:
    router.fail_next(Step.CONFIRMED_COMMIT, Fault.TIMEOUT_AFTER)
    prepared = prepare(worker)
    first, second = batches(worker)
    assert first.state is BatchState.CLOSED
    assert first.members["CKT-1"].state is MemberState.REVERTED
    cancels = [c for c in router.calls if c.step is Step.CANCEL]
    assert [(c.persist_id, c.applied) for c in cancels] == [(first.persist_id, True)]
    assert prepared.success and prepared.persist_id == second.persist_id


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
@pytest.mark.parametrize("step", CONFIRM_STEPS, ids=lambda s: s.name)
def test_a_fault_in_a_confirm_is_answered_as_the_router_holds_it(
    worker: RouterWorker, router: FakeRouter, step: Step, fault: Fault
) -> None:
    prepared = prepare(worker)
    assert prepared.success
    router.fail_next(step, fault)
    enqueue(
        worker.session_factory,
        command(DEVICE, CONFIRM, circuit(100, circuit_id="CKT-1"), persist_id=prepared.persist_id),
    )
    confirmed = answers(worker, 2)[1]
    assert router.pending is None
    if confirmed.success:
        assert KEY in router.subinterfaces()
    else:
        assert KEY not in router.subinterfaces()
        assert confirmed.error.message
    assert_records_match_the_router(worker, router)
    assert not router.unused_faults()


def test_an_unanswered_confirm_that_landed_is_answered_success(
    worker: RouterWorker, router: FakeRouter
) -> None:
    prepared = prepare(worker)
    router.fail_next(Step.CONFIRM, Fault.TIMEOUT_AFTER)
    enqueue(
        worker.session_factory,
        command(DEVICE, CONFIRM, circuit(100, circuit_id="CKT-1"), persist_id=prepared.persist_id),
    )
    confirmed = answers(worker, 2)[1]
    assert confirmed.success, confirmed.error
    [batch] = batches(worker)
    assert batch.members["CKT-1"].state is MemberState.CONFIRMED


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
@pytest.mark.parametrize("step", ROLLBACK_STEPS, ids=lambda s: s.name)
def test_a_fault_in_a_rollback_is_answered_as_the_router_holds_it(
    worker: RouterWorker, router: FakeRouter, step: Step, fault: Fault
) -> None:
    prepare(worker)
    router.fail_next(step, fault)
    enqueue(worker.session_factory, command(DEVICE, ROLLBACK, circuit(100, circuit_id="CKT-1")))
    rolled_back = answers(worker, 2)[1]
    assert router.pending is None
    if rolled_back.success:
        assert KEY not in router.subinterfaces()
    assert_records_match_the_router(worker, router)
    assert not router.unused_faults()


def test_while_the_router_does_not_answer_nothing_is_answered_and_an_alarm_is_raised(
    worker: RouterWorker, router: FakeRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.provisioning.agent.worker.SETTLE_RETRY_S", 0.0)
    prepared = prepare(worker)
    router.fail_next(Step.CONFIRM, Fault.TIMEOUT_AFTER)
    for _ in range(3):  # the settle's confirm and the session it opens get no answer
        router.fail_next(Step.CONNECT, Fault.TIMEOUT_BEFORE)
    enqueue(
        worker.session_factory,
        command(DEVICE, CONFIRM, circuit(100, circuit_id="CKT-1"), persist_id=prepared.persist_id),
    )
    worker.run_once()
    [alarm] = worker.alarms().values()
    [text] = alarm()
    assert "unknown" in text and prepared.persist_id in text
    assert len(replies(worker.session_factory)) == 1, "answered before the router was read"
    drive(worker, lambda: len(replies(worker.session_factory)) == 2 and not router.unused_faults())
    confirmed = replies(worker.session_factory)[1]
    assert confirmed.success, confirmed.error
    assert alarm() == []


def test_a_commit_left_pending_past_its_timeout_raises_the_alarm(
    worker: RouterWorker, router: FakeRouter, factory: sessionmaker[Session]
) -> None:
    prepared = prepare(worker)
    [alarm] = worker.alarms().values()
    assert alarm() == []
    with factory() as db, db.begin():
        row = db.get(AgentBatch, prepared.persist_id)
        assert row is not None
        row.expire_at = row.expire_at.replace(year=2020)
    [text] = alarm()
    assert "past its timeout" in text


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
@pytest.mark.parametrize(
    "step", [Step.EDIT, Step.CONFIRMED_COMMIT_MORE, Step.GET_CONFIG], ids=lambda s: s.name
)
def test_a_fault_in_joining_the_open_batch_is_answered_as_the_router_holds_it(
    worker: RouterWorker, router: FakeRouter, step: Step, fault: Fault
) -> None:
    prepare(worker)
    router.fail_next(step, fault)
    enqueue(worker.session_factory, command(DEVICE, PREPARE, circuit(101, circuit_id="CKT-2")))
    joined = answers(worker, 2)[1]
    pending = router.pending
    held = router.subinterfaces()
    if joined.success:
        assert pending is not None and pending.persist_id == joined.persist_id
        assert ("xe-0/0/1", 101) in held
    else:
        assert ("xe-0/0/1", 101) not in held
    # The first circuit: pending while its batch is open, gone once it was cancelled.
    assert (KEY in held) == any(b.is_open and "CKT-1" in b.members for b in batches(worker))
    assert_records_match_the_router(worker, router)
    assert not router.unused_faults()


def test_a_new_holder_settles_a_batch_left_to_be_settled(
    worker: RouterWorker, router: FakeRouter, factory: sessionmaker[Session]
) -> None:
    prepared = prepare(worker)
    router.fail_next(Step.CONFIRM, Fault.DROP_AFTER)
    enqueue(
        worker.session_factory,
        command(DEVICE, CONFIRM, circuit(100, circuit_id="CKT-1"), persist_id=prepared.persist_id),
    )
    worker.run_once()
    [batch] = batches(worker)
    assert batch.state is BatchState.SETTLE_CONFIRM
    worker.lease.release()
    heir = RouterWorker(DEVICE, router.session(), factory, Renderer(), "replies")
    drive(heir, lambda: len(replies(factory)) == 2)
    confirmed = replies(factory)[1]
    assert confirmed.success, confirmed.error
    assert router.pending is None and KEY in router.subinterfaces()
    assert_records_match_the_router(heir, router)


# -- rollbacks next to an open batch ------------------------------------------------------


def sent(
    worker: RouterWorker, action: int, vlan: int, *, saga: str, persist_id: str = "",
    operation: Operation = Operation.CREATE,
) -> None:
    params = circuit(vlan, circuit_id=f"CKT-{vlan}")
    enqueue(
        worker.session_factory,
        command(DEVICE, action, params, saga_id=saga, persist_id=persist_id,
                operation=operation.value),
    )


def reply_to(worker: RouterWorker, action: int, vlan: int) -> provisioning_pb2.ProvisioningReply:
    [found] = [
        r for r in replies(worker.session_factory)
        if r.action == action and r.circuit_id == f"CKT-{vlan}"
    ]
    return found


def held(router: FakeRouter, vlan: int) -> bool:
    return ("xe-0/0/1", vlan) in router.subinterfaces()


def lock_refusals(router: FakeRouter) -> list[str]:
    return [c.error for c in router.calls if c.step is Step.LOCK and not c.applied]


def confirmed_then_another_batch_open(worker: RouterWorker) -> str:
    """CKT-100 prepared and confirmed (its batch closed), CKT-101 pending in a new batch
    (its lock held); the second batch's persist id."""
    sent(worker, PREPARE, 100, saga="saga-100")
    [first] = answers(worker, 1)
    sent(worker, CONFIRM, 100, saga="saga-100", persist_id=first.persist_id)
    sent(worker, PREPARE, 101, saga="saga-101")
    second = answers(worker, 3)[2]
    assert second.success and second.persist_id != first.persist_id
    return second.persist_id


def test_a_rollback_of_a_confirmed_circuit_next_to_an_open_batch_lands_with_its_confirm(
    worker: RouterWorker, router: FakeRouter
) -> None:
    # The saga of CKT-100 gives up after its confirm (the other router failed), while the
    # worker holds the lock of CKT-101's batch: the inverse goes into that candidate.
    persist_id = confirmed_then_another_batch_open(worker)
    sent(worker, ROLLBACK, 100, saga="saga-100")
    drive(worker, lambda: queued(worker) == 0)
    assert len(replies(worker.session_factory)) == 3, "answered before the batch ended"
    assert held(router, 100)
    sent(worker, CONFIRM, 101, saga="saga-101", persist_id=persist_id)
    answers(worker, 5)
    rolled_back = reply_to(worker, ROLLBACK, 100)
    assert rolled_back.success, rolled_back.error
    assert reply_to(worker, CONFIRM, 101).success
    assert not held(router, 100) and held(router, 101) and router.pending is None
    assert lock_refusals(router) == []
    assert_records_match_the_router(worker, router)


def test_a_rollback_of_a_confirmed_circuit_whose_carrier_batch_is_cancelled_runs_again(
    worker: RouterWorker, router: FakeRouter
) -> None:
    confirmed_then_another_batch_open(worker)
    sent(worker, ROLLBACK, 100, saga="saga-100")
    drive(worker, lambda: queued(worker) == 0)
    # CKT-101's saga rolls back too: its batch is cancelled, and the inverse with it.
    sent(worker, ROLLBACK, 101, saga="saga-101")
    answers(worker, 5)
    assert reply_to(worker, ROLLBACK, 101).success
    lost = reply_to(worker, ROLLBACK, 100)
    assert not lost.success and held(router, 100)
    assert_records_match_the_router(worker, router)
    # The saga sends its ROLLBACK again: no batch is open now, so it runs on its own.
    sent(worker, ROLLBACK, 100, saga="saga-100")
    again = answers(worker, 6)[5]
    assert again.success, again.error
    assert not held(router, 100) and not held(router, 101) and router.pending is None
    assert lock_refusals(router) == []
    assert_records_match_the_router(worker, router)


def test_an_inverse_committed_by_a_top_up_is_not_applied_again_by_the_next(
    worker: RouterWorker, router: FakeRouter
) -> None:
    # Two disconnects in one batch; one is rolled back (its inverse, a create, goes into
    # the candidate); two circuits join one after the other: the first join commits that
    # inverse, the second must not edit it in again (the router: data-exists).
    renderer = Renderer()
    router.seed(*(
        renderer.render(
            "openconfig", Operation.CREATE, circuit_end(circuit(v), Side.SINGAPORE)
        ).content
        for v in (100, 101)
    ))
    sent(worker, PREPARE, 100, saga="saga-100", operation=Operation.DELETE)
    sent(worker, PREPARE, 101, saga="saga-101", operation=Operation.DELETE)
    persist_id = answers(worker, 2)[0].persist_id
    sent(worker, ROLLBACK, 100, saga="saga-100")
    drive(worker, lambda: queued(worker) == 0)
    for vlan in (102, 103):
        sent(worker, PREPARE, vlan, saga=f"saga-{vlan}")
        drive(worker, lambda: queued(worker) == 0)
    for vlan in (102, 103):
        joined = reply_to(worker, PREPARE, vlan)
        assert joined.success and joined.persist_id == persist_id, joined.error
    sent(worker, CONFIRM, 101, saga="saga-101", persist_id=persist_id)
    answers(worker, 6)
    assert reply_to(worker, ROLLBACK, 100).success
    assert held(router, 100) and not held(router, 101)
    assert held(router, 102) and held(router, 103) and router.pending is None
    assert_records_match_the_router(worker, router)
