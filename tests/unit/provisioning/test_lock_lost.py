"""The candidate is written only under the agent's own lock, on the in-memory router.

An open batch holds the candidate lock. When its session is lost (the router's end killed
it, or the router restarted), the lock and the candidate's edits go with it while the
confirmed commit stays pending. The worker then settles the batch as one left open by a
previous holder, and never edits or discards on the new session without locking first:
a candidate another session edited meanwhile is not the agent's to discard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.provisioning.agent.context import RouterContext
from services.provisioning.agent.jobs import PREPARE
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.domain.batch import BatchState
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.rendering import Renderer
from tests.integration.provisioning.helpers import circuit, command, database, enqueue
from tests.unit.provisioning.fake_router import FakeRouter
from tests.unit.provisioning.test_agent_faults import (
    DEVICE,
    answers,
    assert_records_match_the_router,
    batches,
)

WRITES = ("_edit", "_discard", "_commit", "_confirmed_commit_more")


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter("openconfig", name=DEVICE.name)


@pytest.fixture
def worker(router: FakeRouter, tmp_path: Path) -> RouterWorker:
    factory = database(f"sqlite:///{tmp_path / 'provisioning.db'}")
    return RouterWorker(DEVICE, router.session(), factory, Renderer(), "replies")


def lockless_writes(router: FakeRouter) -> list[tuple[str, int]]:
    """From now on, every candidate write by a session not holding the lock at that
    moment, as (the router's method, session id)."""
    found: list[tuple[str, int]] = []

    def checking(name: str) -> Any:
        original = getattr(router, name)

        def checked(sid: int, *args: Any) -> Any:
            if router.lock_owner != sid:
                found.append((name, sid))
            return original(sid, *args)

        return checked

    for name in WRITES:
        setattr(router, name, checking(name))
    return found


def sg_payload(vlan: int) -> str:
    end = circuit_end(circuit(vlan), Side.SINGAPORE)
    return Renderer().render("openconfig", Operation.CREATE, end).content


def prepared_then_session_lost(worker: RouterWorker, router: FakeRouter) -> str:
    """A batch open (its lock held), then every session killed at the router's end."""
    enqueue(worker.session_factory, command(DEVICE, PREPARE, circuit(100), saga_id="saga-a"))
    [prepared] = answers(worker, 1)
    assert prepared.success
    router.kill_sessions()  # the lock and the candidate go; the commit stays pending
    return prepared.persist_id


def test_an_open_batch_whose_lock_was_lost_is_settled_not_edited(
    worker: RouterWorker, router: FakeRouter
) -> None:
    persist_id = prepared_then_session_lost(worker, router)
    lockless = lockless_writes(router)
    enqueue(worker.session_factory, command(DEVICE, PREPARE, circuit(101), saga_id="saga-b"))
    second = answers(worker, 2)[1]
    assert second.success and second.persist_id != persist_id  # a batch of its own
    assert lockless == []
    [old] = [b for b in batches(worker) if b.persist_id == persist_id]
    assert old.state is not BatchState.OPEN  # settled (cancelled: no confirm was queued)
    assert_records_match_the_router(worker, router)


def test_a_release_after_the_lock_was_lost_leaves_another_sessions_edit(
    router: FakeRouter,
) -> None:
    ours = router.session()
    ours.lock_candidate()
    ours.edit_candidate(sg_payload(100))
    router.kill_sessions()  # our lock and edit go with the session
    router.session().edit_candidate(sg_payload(102))  # another's, without a lock
    lockless = lockless_writes(router)
    RouterContext(DEVICE, ours, Renderer(), ledger=None).release()  # type: ignore[arg-type]
    assert lockless == []
    assert router.candidate_dirty, "release discarded another session's edit"
