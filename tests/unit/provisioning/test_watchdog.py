"""The watchdog's read of a router (on the fake router) and what it makes of running."""

from __future__ import annotations

import pytest

from services.provisioning.domain.circuits import CircuitEnd, Operation
from services.provisioning.domain.faults import RouterFailure
from services.provisioning.domain.observe import intended_leaves, running_subinterfaces
from services.provisioning.domain.saga import Held, held_of
from services.provisioning.rendering import Renderer
from services.provisioning.watchdog import read_when_settled
from tests.unit.provisioning.fake_router import FakeClock, FakeRouter, Fault, Step

END = CircuitEnd("CKT-1", "edge-1", "xe-0/0/1", 120, "t", 100, 0)


def created(router: FakeRouter, *, confirm: bool) -> None:
    """CKT-1 committed by another session, confirmed or left pending (lock released)."""
    writer = router.session()
    writer.lock_candidate()
    writer.edit_candidate(Renderer().render(router.platform, Operation.CREATE, END).content)
    writer.confirmed_commit("p-1", 60)
    if confirm:
        writer.confirm("p-1")
    writer.unlock_candidate()


def test_a_router_with_no_commit_pending_is_read_and_its_lock_given_back() -> None:
    router = FakeRouter(clock=FakeClock())
    created(router, confirm=True)
    running = read_when_settled(router.session())
    assert running is not None and ("xe-0/0/1", 120) in running_subinterfaces(
        router.platform, running
    )
    assert router.lock_owner is None


def test_a_pending_commit_is_not_read_as_final() -> None:
    router = FakeRouter(clock=FakeClock())
    created(router, confirm=False)
    assert read_when_settled(router.session()) is None
    assert router.pending is not None, "the probe touches no pending commit"
    router.clock.advance(61)  # type: ignore[attr-defined]
    running = read_when_settled(router.session())
    assert running is not None and not running_subinterfaces(router.platform, running)


def test_an_unreachable_router_fails_the_read() -> None:
    router = FakeRouter(clock=FakeClock())
    router.fail_next(Step.CONNECT, Fault.TIMEOUT_BEFORE)
    with pytest.raises(RouterFailure):
        read_when_settled(router.session())


def test_what_a_router_holds_against_the_target_and_the_previous_state() -> None:
    target = intended_leaves("openconfig", END)
    previous = intended_leaves("openconfig", CircuitEnd("CKT-1", "edge-1", "xe-0/0/1", 120,
                                                        "t", 50, 0))
    assert held_of(target, target, previous) is Held.TARGET
    assert held_of(previous, target, previous) is Held.PREVIOUS
    assert held_of(None, target, None) is Held.PREVIOUS, "a create's previous is nothing"
    assert held_of(None, target, previous) is Held.OTHER
    assert held_of(None, None, target) is Held.TARGET, "a delete's target is nothing"
    assert held_of(previous, target, previous, known=False) is Held.OTHER
