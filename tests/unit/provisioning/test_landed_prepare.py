"""A PREPARE whose commit landed while its agent died before answering, on the in-memory
router.

The agent joins a circuit to the open batch (recorded first), its follow-up confirmed commit
lands, and the agent is killed before it answers. The agent taking the router over settles
the batch (confirmed: another member's CONFIRM is queued), which leaves the circuit in
running for good; the PREPARE is still queued. Creating the circuit again would be refused
with "data exists" (the scale-out test's flake): it is answered as prepared in the batch
instead, and the saga's CONFIRM then succeeds.
"""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.provisioning.agent import prepare as prepare_step
from services.provisioning.agent.jobs import CONFIRM, PREPARE
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.crashpoints import AGENT_AFTER_CONFIRMED_COMMIT
from services.provisioning.domain.batch import BatchState, MemberState
from services.provisioning.rendering import Renderer
from tests.integration.provisioning.helpers import replies
from tests.unit.provisioning.fake_router import FakeRouter, Step
from tests.unit.provisioning.test_agent_faults import (
    DEVICE,
    answers,
    assert_records_match_the_router,
    batches,
    drive,
    held,
    reply_to,
    sent,
)


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter("openconfig", name=DEVICE.name)


@pytest.fixture
def worker(router: FakeRouter, factory: sessionmaker[Session]) -> RouterWorker:
    return RouterWorker(DEVICE, router.session(), factory, Renderer(), "replies")


class Killed(BaseException):
    """The agent's process ends here (SIGKILL): nothing after it runs."""


def killed_after_the_commit_of(monkeypatch: pytest.MonkeyPatch, circuit_id: str) -> None:
    def crash(point: str, circuit: str) -> None:
        if point == AGENT_AFTER_CONFIRMED_COMMIT and circuit == circuit_id:
            raise Killed

    monkeypatch.setattr(prepare_step, "crash_point", crash)


def test_a_prepare_whose_commit_landed_unanswered_is_answered_from_the_settled_batch(
    worker: RouterWorker,
    router: FakeRouter,
    factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent(worker, PREPARE, 100, saga="saga-100")
    [first] = answers(worker, 1)
    killed_after_the_commit_of(monkeypatch, "CKT-101")
    sent(worker, PREPARE, 101, saga="saga-101")
    with pytest.raises(Killed):
        drive(worker, lambda: False)
    monkeypatch.undo()
    [batch] = batches(worker)
    assert set(batch.members) == {"CKT-100", "CKT-101"} and batch.is_open
    assert held(router, 101) and router.pending is not None  # landed, unanswered
    sent(worker, CONFIRM, 100, saga="saga-100", persist_id=first.persist_id)
    router.kill_sessions()  # the dead agent's session goes; its commit stays pending

    heir = RouterWorker(DEVICE, router.session(), factory, Renderer(), "replies",
                        holder="heir")
    worker.lease.release()
    drive(heir, lambda: len(replies(factory)) == 3)
    prepared = reply_to(heir, PREPARE, 101)
    assert prepared.success, prepared.error
    assert prepared.persist_id == first.persist_id
    assert not [c for c in router.calls if c.step is Step.EDIT and not c.applied], (
        "the circuit was created again")
    assert reply_to(heir, CONFIRM, 100).success

    sent(heir, CONFIRM, 101, saga="saga-101", persist_id=prepared.persist_id)
    drive(heir, lambda: len(replies(factory)) == 4)
    confirmed = reply_to(heir, CONFIRM, 101)
    assert confirmed.success, confirmed.error
    assert held(router, 101) and router.pending is None
    [settled] = batches(heir)
    assert settled.state is BatchState.CLOSED
    assert settled.members["CKT-101"].state in (MemberState.COMMITTED, MemberState.CONFIRMED)
    assert_records_match_the_router(heir, router)

