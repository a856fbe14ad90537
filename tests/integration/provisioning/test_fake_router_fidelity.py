"""The fake router answers as the real one does: the same scenarios, written once, run on
the fake (tests/unit/provisioning/fake_router.py) and on the devstack's netconfd through
NetconfSession, on both platforms, and assert the same observable results.

Time belongs to the bench: on the real router a pause sleeps, on the fake it advances the
fake's clock. A wait for a revert polls with pauses longer than a second, because netconfd
checks a commit's timeout only after a second without input on any session: a faster poll
holds the revert off (test_a_router_read_more_often_than_once_a_second_does_not_revert).
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from devstack.netconf import RouterFleet
from services.provisioning.domain.circuits import CircuitEnd, Operation
from services.provisioning.domain.faults import RouterFailure, RouterFault
from services.provisioning.domain.merge import merge_configs
from services.provisioning.domain.observe import (
    Leaves,
    SubinterfaceKey,
    intended_leaves,
    running_filter,
    running_subinterfaces,
)
from services.provisioning.netconf import NetconfSession, explain
from services.provisioning.rendering import Renderer
from services.provisioning.router import (
    CONFIRMED_COMMIT_NOT_ACTIVE,
    RouterSession,
    cancel_found_nothing,
    commit_found_nothing,
)
from tests.integration.provisioning.helpers import device_of
from tests.unit.provisioning.fake_router import FakeClock, FakeRouter, FakeSession

pytestmark = pytest.mark.integration

VLANS = itertools.count(3300)
INTERFACE = {"openconfig": "xe-0/0/1", "cq-vendor": "GigabitEthernet0/0/1"}
# Never committed to, so absent from the router.
FRESH_INTERFACE = {"openconfig": "xe-0/9/9", "cq-vendor": "GigabitEthernet0/9/9"}
SHORT_TIMEOUT_S = 2
# Pauses of a poll that lets the router idle (and so check its timeout), and of one that
# keeps it busy; a busy poll paused this long was stalled by the machine.
IDLE_POLL_S, BUSY_POLL_S, STALL_S = 1.5, 0.2, 0.8
REVERT_BOUND_S = 20.0
IN_USE_COMMIT = ("in-use", "cannot perform the operation with confirmed-commit pending")
LOCKED = "candidate locked by another session: "
RENDERER = Renderer()


@dataclass
class Bench:
    """One router, fake or real, and the time its scenario runs on."""

    platform: str
    connect: Callable[[], RouterSession]
    drop: Callable[[RouterSession], None]
    now: Callable[[], float]
    pause: Callable[[float], None]
    opened: list[RouterSession] = field(default_factory=list)
    vlans: list[int] = field(default_factory=list)
    persist_ids: list[str] = field(default_factory=list)

    def session(self) -> RouterSession:
        session = self.connect()
        self.opened.append(session)
        return session

    def vlan(self) -> int:
        self.vlans.append(next(VLANS))
        return self.vlans[-1]

    def persist_id(self) -> str:
        self.persist_ids.append(f"fidelity-{uuid.uuid4().hex[:12]}")
        return self.persist_ids[-1]

    def end(self, vlan: int, mbps: int = 100, interface: str = "") -> CircuitEnd:
        interface = interface or INTERFACE[self.platform]
        return CircuitEnd(f"CKT-F{vlan}", "edge", interface, vlan, "f", mbps, 0)

    def payload(self, operation: Operation, vlan: int, mbps: int = 100, interface: str = "") -> str:
        return RENDERER.render(self.platform, operation, self.end(vlan, mbps, interface)).content

    def key(self, vlan: int) -> SubinterfaceKey:
        return (INTERFACE[self.platform], vlan)

    def read(self, session: RouterSession, vlans: list[int]) -> dict[SubinterfaceKey, Leaves]:
        """The sub-interfaces of ``vlans`` in running (one filtered get-config)."""
        subtree = running_filter(self.platform, [self.key(v) for v in vlans])
        return running_subinterfaces(self.platform, session.running(subtree))

    def present(self, session: RouterSession) -> set[int]:
        """Which of this scenario's VLANs running holds."""
        return {vlan for _, vlan in self.read(session, self.vlans)}

    def wait_until(self, what: str, probe: Callable[[], bool]) -> None:
        """Poll ``probe`` with idle pauses until true; fail past the bound."""
        deadline = self.now() + REVERT_BOUND_S
        while not probe():
            if self.now() > deadline:
                raise AssertionError(f"{what}: not within {REVERT_BOUND_S} s")
            self.pause(IDLE_POLL_S)

    def cleanup(self) -> None:
        """Nothing of the scenario left: no commit of its pending, none of its VLANs."""
        for opened in self.opened:
            opened.close()
        session = self.connect()
        try:
            for persist_id in self.persist_ids:
                with contextlib.suppress(RouterFailure):
                    session.cancel(persist_id)
            session.discard()
            left = self.present(session)
            if left:
                session.lock_candidate()
                for vlan in left:
                    session.edit_candidate(self.payload(Operation.DELETE, vlan))
                session.commit()
                session.unlock_candidate()
        finally:
            session.close()


def drop_fake(session: RouterSession) -> None:
    assert isinstance(session, FakeSession)
    session.drop()


def drop_netconf(session: RouterSession) -> None:
    """The transport closed without a close-session, as on a lost connection."""
    assert isinstance(session, NetconfSession)
    session._drop()


@pytest.fixture(params=["fake-openconfig", "fake-cq-vendor", "real-sg-edge-1", "real-cq-edge-1"])
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    kind, _, which = str(request.param).partition("-")
    if kind == "fake":
        clock = FakeClock()
        router = FakeRouter(which, clock=clock)
        made = Bench(which, router.session, drop_fake, clock, clock.advance)
    else:
        fleet: RouterFleet = request.getfixturevalue("routers")
        device = device_of(fleet[which])
        made = Bench(
            device.platform,
            lambda: NetconfSession(device, timeout_s=10),
            drop_netconf,
            time.monotonic,
            time.sleep,
        )
    yield made
    made.cleanup()


def refusal(step: Callable[[], object]) -> RouterFault:
    with pytest.raises(RouterFailure) as caught:
        step()
    return caught.value.fault


def answer(fault: RouterFault) -> tuple[str, str]:
    return fault.error_tag, fault.message


def commit_pending(bench: Bench, vlan: int, persist_id: str, timeout_s: int) -> RouterSession:
    """A new session that locks, edits ``vlan`` in and makes a confirmed commit; it keeps
    the lock."""
    session = bench.session()
    session.lock_candidate()
    session.edit_candidate(bench.payload(Operation.CREATE, vlan))
    session.confirmed_commit(persist_id, timeout_s)
    return session


# -- confirmed commits ------------------------------------------------------------------


def test_a_persistent_commit_survives_its_session_and_is_confirmed_from_another(
    bench: Bench,
) -> None:
    vlan, persist_id = bench.vlan(), bench.persist_id()
    commit_pending(bench, vlan, persist_id, 60).close()
    other = bench.session()
    assert bench.present(other) == {vlan}
    other.confirm(persist_id)
    assert commit_found_nothing(refusal(lambda: other.confirm(persist_id)))
    assert bench.present(other) == {vlan}


def test_a_persistent_commit_is_cancelled_from_another_session(bench: Bench) -> None:
    vlan, persist_id = bench.vlan(), bench.persist_id()
    commit_pending(bench, vlan, persist_id, 60).close()
    other = bench.session()
    other.cancel(persist_id)
    assert bench.present(other) == set()
    other.lock_candidate()
    other.unlock_candidate()


@pytest.mark.parametrize("ending", ["open", "closed", "dropped"])
def test_a_pending_commit_is_reverted_at_its_timeout(bench: Bench, ending: str) -> None:
    vlan, persist_id = bench.vlan(), bench.persist_id()
    first = commit_pending(bench, vlan, persist_id, SHORT_TIMEOUT_S)
    if ending == "closed":
        first.close()
    elif ending == "dropped":
        bench.drop(first)
    observer = bench.session()
    bench.wait_until("the commit's revert", lambda: bench.present(observer) == set())
    if ending == "open":
        # The committing session keeps its lock over the revert.
        assert answer(refusal(observer.lock_candidate)) == ("lock-denied", LOCKED + "lock denied")
        first.unlock_candidate()
    observer.lock_candidate()
    observer.unlock_candidate()
    assert commit_found_nothing(refusal(lambda: observer.confirm(persist_id)))


def hold_off(bench: Bench, reader: RouterSession, seconds: float) -> tuple[bool, float]:
    """Read running every BUSY_POLL_S for ``seconds``: whether the scenario's last VLAN
    stayed all along, and the longest time between two reads."""
    start = last = bench.now()
    stayed, longest = True, 0.0
    while bench.now() - start < seconds:
        stayed = stayed and bench.vlans[-1] in bench.present(reader)
        longest, last = max(longest, bench.now() - last), bench.now()
        bench.pause(BUSY_POLL_S)
    return stayed, longest


def test_a_router_read_more_often_than_once_a_second_does_not_revert(bench: Bench) -> None:
    reader = bench.session()
    reader.running()  # connected before the time counts
    for _attempt in range(3):
        commit_pending(bench, bench.vlan(), bench.persist_id(), SHORT_TIMEOUT_S).close()
        stayed, longest = hold_off(bench, reader, SHORT_TIMEOUT_S + 3)
        if longest < STALL_S:
            break
        # The machine stalled the poller long enough for the router to check: again.
        bench.wait_until("a stalled attempt's revert", lambda: bench.present(reader) == set())
    else:
        pytest.fail(f"the poller stalled on every attempt (last gap {longest:.1f} s)")
    assert stayed, "the commit was reverted while the router was read every 0.2 s"
    bench.wait_until("the revert once the router idles", lambda: bench.present(reader) == set())


def test_no_session_gets_the_lock_while_a_commit_is_pending(bench: Bench) -> None:
    persist_id = bench.persist_id()
    first = commit_pending(bench, bench.vlan(), persist_id, 60)
    first.unlock_candidate()
    other = bench.session()
    for session in (first, other):  # the committing session too
        refused = refusal(session.lock_candidate)
        assert answer(refused) == IN_USE_COMMIT and refused.retryable
    other.cancel(persist_id)
    other.lock_candidate()
    other.unlock_candidate()


def test_a_follow_up_commit_joins_the_pending_one(bench: Bench) -> None:
    first_vlan, second_vlan, persist_id = bench.vlan(), bench.vlan(), bench.persist_id()
    session = commit_pending(bench, first_vlan, persist_id, 60)
    session.edit_candidate(bench.payload(Operation.CREATE, second_vlan))
    session.confirmed_commit_more(persist_id, 60)
    other = bench.session()
    assert bench.present(other) == {first_vlan, second_vlan}
    other.cancel(persist_id)
    assert bench.present(other) == set()


def test_a_follow_up_commit_restarts_the_timeout_with_its_own(bench: Bench) -> None:
    first_vlan, second_vlan, persist_id = bench.vlan(), bench.vlan(), bench.persist_id()
    session = commit_pending(bench, first_vlan, persist_id, 600)
    session.edit_candidate(bench.payload(Operation.CREATE, second_vlan))
    session.confirmed_commit_more(persist_id, SHORT_TIMEOUT_S)
    session.unlock_candidate()
    observer = bench.session()
    bench.wait_until("the joined commit's revert", lambda: bench.present(observer) == set())


def test_persist_ids_the_router_does_not_hold_are_refused(bench: Bench) -> None:
    session = bench.session()
    unknown = "fidelity-never-committed"
    for step in (
        lambda: session.confirm(unknown),
        lambda: session.confirmed_commit_more(unknown, 5),
    ):
        refused = refusal(step)
        assert CONFIRMED_COMMIT_NOT_ACTIVE in refused.message and commit_found_nothing(refused)
    # A cancel of nothing answers otherwise: a plain "operation failed".
    cancel = refusal(lambda: session.cancel(unknown))
    assert answer(cancel) == ("operation-failed", "operation failed")
    assert cancel_found_nothing(cancel)
    persist_id = bench.persist_id()
    commit_pending(bench, bench.vlan(), persist_id, 60).unlock_candidate()
    for step in (
        lambda: session.confirm(unknown),
        lambda: session.confirmed_commit_more(unknown, 5),
        lambda: session.cancel(unknown),
    ):
        assert answer(refusal(step)) == ("invalid-value", "invalid value")
    assert cancel_found_nothing(refusal(lambda: session.cancel(unknown)))
    assert answer(refusal(lambda: session.confirmed_commit(unknown, 5))) == (
        "operation-failed",
        "operation failed",
    )
    session.cancel(persist_id)  # still the one pending


def test_a_plain_commit_confirms_only_from_the_committing_session(bench: Bench) -> None:
    vlan, persist_id = bench.vlan(), bench.persist_id()
    first = commit_pending(bench, vlan, persist_id, 60)
    first.unlock_candidate()
    other = bench.session()
    assert answer(refusal(other.commit)) == IN_USE_COMMIT
    first.commit()
    assert commit_found_nothing(refusal(lambda: other.confirm(persist_id)))
    assert bench.present(other) == {vlan}


# -- edits --------------------------------------------------------------------------------


def test_running_holds_the_intended_leaves_and_a_filter_selects_only_what_it_names(
    bench: Bench,
) -> None:
    first, second = bench.vlan(), bench.vlan()
    session = bench.session()
    session.lock_candidate()
    session.edit_candidate(bench.payload(Operation.CREATE, first))
    session.edit_candidate(bench.payload(Operation.CREATE, second, mbps=300))
    session.commit()
    session.unlock_candidate()
    assert bench.read(session, [first, second]) == {
        bench.key(first): intended_leaves(bench.platform, bench.end(first)),
        bench.key(second): intended_leaves(bench.platform, bench.end(second, 300)),
    }
    assert bench.read(session, [second, bench.vlan()]).keys() == {bench.key(second)}


def test_create_of_an_existing_subinterface_is_refused_and_the_edit_is_all_or_nothing(
    bench: Bench,
) -> None:
    existing, new = bench.vlan(), bench.vlan()
    session = bench.session()
    session.lock_candidate()
    session.edit_candidate(bench.payload(Operation.CREATE, existing))
    session.commit()
    both = merge_configs([bench.payload(Operation.CREATE, v) for v in (new, existing)])
    assert answer(refusal(lambda: session.edit_candidate(both))) == ("data-exists", "data exists")
    session.commit()
    session.unlock_candidate()
    assert bench.present(session) == {existing}


def test_remove_of_an_absent_one_succeeds_delete_is_refused_and_replace_replaces(
    bench: Bench,
) -> None:
    vlan, absent = bench.vlan(), bench.vlan()
    session = bench.session()
    session.lock_candidate()
    session.edit_candidate(bench.payload(Operation.CREATE, vlan))
    session.edit_candidate(bench.payload(Operation.DELETE, absent))
    delete = bench.payload(Operation.DELETE, absent).replace('"remove"', '"delete"')
    assert answer(refusal(lambda: session.edit_candidate(delete))) == (
        "data-missing",
        "data missing",
    )
    session.commit()
    session.edit_candidate(bench.payload(Operation.MODIFY, vlan, mbps=700))
    session.commit()
    session.unlock_candidate()
    assert bench.read(session, [vlan, absent]) == {
        bench.key(vlan): intended_leaves(bench.platform, bench.end(vlan, 700))
    }


def test_an_interface_the_router_lacks_is_refused_to_edits_that_cannot_create_it(
    bench: Bench,
) -> None:
    fresh = FRESH_INTERFACE[bench.platform]
    session = bench.session()
    session.lock_candidate()
    remove = bench.payload(Operation.DELETE, bench.vlan(), interface=fresh)
    modify = bench.payload(Operation.MODIFY, bench.vlan(), interface=fresh)
    missing = ("data-missing", "required value instance not found")
    assert answer(refusal(lambda: session.edit_candidate(remove))) == missing
    if bench.platform == "openconfig":  # the interface's mandatory config is not in it
        assert answer(refusal(lambda: session.edit_candidate(modify))) == missing
    else:
        session.edit_candidate(modify)
    session.discard()
    session.unlock_candidate()


def test_a_vlan_out_of_range_is_refused(bench: Bench) -> None:
    session = bench.session()
    config = RENDERER.render(bench.platform, Operation.CREATE, bench.end(5000)).content
    expected = {
        "openconfig": ("unknown-element", "wrong node type"),
        "cq-vendor": ("invalid-value", "value not in range"),
    }
    assert answer(refusal(lambda: session.edit_candidate(config))) == expected[bench.platform]
    session.lock_candidate()  # the candidate was left clean
    session.unlock_candidate()


# -- the candidate and its lock -----------------------------------------------------------


def test_an_edit_without_the_lock_is_accepted_and_keeps_the_lock_away_until_discarded(
    bench: Bench,
) -> None:
    writer, other = bench.session(), bench.session()
    writer.edit_candidate(bench.payload(Operation.CREATE, bench.vlan()))
    for session in (writer, other):
        assert answer(refusal(session.lock_candidate)) == (
            "resource-denied",
            explain("resource-denied", "candidate cannot be locked, discard-changes needed"),
        )
    other.discard()
    other.lock_candidate()
    other.commit()
    other.unlock_candidate()
    assert bench.present(other) == set()


def test_a_confirming_commit_commits_what_another_session_left_in_the_candidate(
    bench: Bench,
) -> None:
    first, second, persist_id = bench.vlan(), bench.vlan(), bench.persist_id()
    commit_pending(bench, first, persist_id, 60).unlock_candidate()
    bench.session().edit_candidate(bench.payload(Operation.CREATE, second))  # no lock
    confirmer = bench.session()
    confirmer.confirm(persist_id)
    assert bench.present(confirmer) == {first, second}


def test_another_sessions_lock_stops_a_confirm_but_not_a_cancel(bench: Bench) -> None:
    persist_id = bench.persist_id()
    holder = commit_pending(bench, bench.vlan(), persist_id, 60)
    other = bench.session()
    assert answer(refusal(lambda: other.confirm(persist_id))) == (
        "in-use",
        LOCKED + "config locked",
    )
    other.cancel(persist_id)
    assert bench.present(other) == set()
    assert answer(refusal(other.lock_candidate)) == ("lock-denied", LOCKED + "lock denied")
    holder.unlock_candidate()
