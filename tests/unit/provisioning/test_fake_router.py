"""The fake router: each behaviour measured on the devstack's netconfd (the fidelity test
runs the same scenarios on both), the clock it reverts by, and its injected faults."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.provisioning.domain.circuits import CircuitEnd, Operation
from services.provisioning.domain.faults import FaultKind, RouterFailure, RouterFault
from services.provisioning.domain.merge import merge_configs
from services.provisioning.domain.observe import (
    CQ_IFM,
    OC_IF,
    intended_leaves,
    running_filter,
    running_subinterfaces,
)
from services.provisioning.rendering import Renderer
from services.provisioning.router import (
    CONFIRMED_COMMIT_NOT_ACTIVE,
    RouterSession,
    cancel_found_nothing,
    commit_found_nothing,
    outcome_unknown,
)
from tests.unit.provisioning.fake_router import (
    IN_USE_COMMIT,
    NC,
    FakeClock,
    FakeRouter,
    FakeSession,
    Fault,
    Step,
)

INTERFACE = {"openconfig": "xe-0/0/1", "cq-vendor": "GigabitEthernet0/0/1"}
FRESH_INTERFACE = {"openconfig": "xe-0/9/9", "cq-vendor": "GigabitEthernet0/9/9"}
RENDERER = Renderer()


@pytest.fixture(params=["openconfig", "cq-vendor"])
def router(request: pytest.FixtureRequest) -> FakeRouter:
    return FakeRouter(request.param, name="edge-1", clock=FakeClock())


def end(router: FakeRouter, vlan: int, mbps: int = 100, interface: str = "") -> CircuitEnd:
    interface = interface or INTERFACE[router.platform]
    return CircuitEnd(f"CKT-{vlan}", "edge-1", interface, vlan, "t", mbps, 0)


def payload(
    router: FakeRouter, operation: Operation, vlan: int, mbps: int = 100, interface: str = ""
) -> str:
    return RENDERER.render(router.platform, operation, end(router, vlan, mbps, interface)).content


def vlans(router: FakeRouter) -> set[int]:
    return {vlan for _, vlan in router.subinterfaces()}


def refusal(step: Callable[[], object]) -> RouterFault:
    with pytest.raises(RouterFailure) as caught:
        step()
    return caught.value.fault


def answer(fault: RouterFault) -> tuple[str, str]:
    return fault.error_tag, fault.message


def pending_commit(router: FakeRouter, vlan: int, persist_id: str, timeout_s: int) -> FakeSession:
    """A session that locked, edited ``vlan`` in and made a confirmed commit (lock kept)."""
    session = router.session()
    session.lock_candidate()
    session.edit_candidate(payload(router, Operation.CREATE, vlan))
    session.confirmed_commit(persist_id, timeout_s)
    return session


def idle(router: FakeRouter, seconds: float) -> None:
    assert isinstance(router.clock, FakeClock)
    router.clock.advance(seconds)


# -- the datastore ----------------------------------------------------------------------


def test_running_reads_back_exactly_the_leaves_the_payloads_intend(router: FakeRouter) -> None:
    session: RouterSession = router.session()
    session.lock_candidate()
    session.edit_candidate(payload(router, Operation.CREATE, 101))
    session.edit_candidate(payload(router, Operation.CREATE, 102, mbps=300))
    session.commit()
    key = (INTERFACE[router.platform], 101)
    assert router.subinterfaces() == {
        key: intended_leaves(router.platform, end(router, 101)),
        (key[0], 102): intended_leaves(router.platform, end(router, 102, 300)),
    }
    one = session.running(running_filter(router.platform, [key, (key[0], 999)]))
    assert running_subinterfaces(router.platform, one).keys() == {key}
    every = session.running(running_filter(router.platform, []))
    assert running_subinterfaces(router.platform, every) == router.subinterfaces()
    none = session.running('<nothing xmlns="urn:example:none"/>')
    assert running_subinterfaces(router.platform, none) == {}


def test_create_of_an_existing_subinterface_is_refused_and_an_edit_is_all_or_nothing(
    router: FakeRouter,
) -> None:
    router.seed(payload(router, Operation.CREATE, 101))
    session = router.session()
    session.lock_candidate()
    session.edit_candidate(payload(router, Operation.CREATE, 102))
    # One edit: a new sub-interface and an existing one.
    both = merge_configs([payload(router, Operation.CREATE, v) for v in (104, 101)])
    refused = refusal(lambda: session.edit_candidate(both))
    assert (refused.kind, refused.error_tag, refused.message) == (
        FaultKind.RPC_ERROR,
        "data-exists",
        "data exists",
    )
    session.commit()
    assert vlans(router) == {101, 102}


def test_remove_of_an_absent_one_succeeds_delete_is_data_missing_replace_replaces(
    router: FakeRouter,
) -> None:
    router.seed(payload(router, Operation.CREATE, 101))
    session = router.session()
    session.lock_candidate()
    session.edit_candidate(payload(router, Operation.DELETE, 555))
    delete = payload(router, Operation.DELETE, 555).replace('"remove"', '"delete"')
    assert refusal(lambda: session.edit_candidate(delete)).error_tag == "data-missing"
    session.edit_candidate(payload(router, Operation.MODIFY, 101, mbps=700))
    session.commit()
    assert router.subinterfaces() == {
        (INTERFACE[router.platform], 101): intended_leaves(router.platform, end(router, 101, 700))
    }


def test_an_interface_the_router_lacks_is_refused_to_edits_that_cannot_create_it(
    router: FakeRouter,
) -> None:
    fresh = FRESH_INTERFACE[router.platform]
    session = router.session()
    remove = payload(router, Operation.DELETE, 101, interface=fresh)
    modify = payload(router, Operation.MODIFY, 101, interface=fresh)
    missing = ("data-missing", "required value instance not found")
    assert answer(refusal(lambda: session.edit_candidate(remove))) == missing
    if router.platform == "openconfig":  # the interface's mandatory config is not in it
        assert answer(refusal(lambda: session.edit_candidate(modify))) == missing
    else:
        session.edit_candidate(modify)
    session.discard()
    session.edit_candidate(payload(router, Operation.CREATE, 101, interface=fresh))
    session.edit_candidate(remove)
    session.commit()
    session.edit_candidate(remove)  # the interface stayed
    session.commit()
    assert fresh in router.running_xml() and vlans(router) == set()


def test_an_edit_without_operation_merges_into_the_subinterface(router: FakeRouter) -> None:
    router.seed(payload(router, Operation.CREATE, 101))
    name = INTERFACE[router.platform]
    description = {
        "openconfig": f'<interfaces xmlns="{OC_IF}"><interface><name>{name}</name>'
        "<subinterfaces><subinterface><index>101</index>"
        "<config><description>renamed</description></config>"
        "</subinterface></subinterfaces></interface></interfaces>",
        "cq-vendor": f'<ifm xmlns="{CQ_IFM}"><interfaces><interface><name>{name}</name>'
        "<sub-interfaces><sub-interface><number>101</number>"
        "<description>renamed</description>"
        "</sub-interface></sub-interfaces></interface></interfaces></ifm>",
    }[router.platform]
    session = router.session()
    session.edit_candidate(f'<config xmlns="{NC}">{description}</config>')
    session.commit()
    expected = intended_leaves(router.platform, end(router, 101))
    expected.update({p: "renamed" for p in expected if p.endswith("/description")})
    assert router.subinterfaces() == {(name, 101): expected}


def test_a_vlan_out_of_range_is_refused_with_the_platforms_message(router: FakeRouter) -> None:
    bad = CircuitEnd("CKT-X", "edge-1", INTERFACE[router.platform], 5000, "t", 100, 0)
    config = RENDERER.render(router.platform, Operation.CREATE, bad).content
    refused = refusal(lambda: router.session().edit_candidate(config))
    expected = {"openconfig": "wrong node type", "cq-vendor": "value not in range"}
    assert refused.message == expected[router.platform]
    assert not router.candidate_dirty


def test_what_the_fake_does_not_model_is_a_clear_error(router: FakeRouter) -> None:
    with pytest.raises(ValueError, match="platform"):
        FakeRouter("junos")
    interface_op = payload(router, Operation.CREATE, 101).replace(
        "<interface>", '<interface nc:operation="remove">'
    )
    with pytest.raises(ValueError, match="interface"):
        router.session().edit_candidate(interface_op)
    with pytest.raises(ValueError, match="well-formed"):
        router.session().edit_candidate("<config>")


# -- confirmed commits ------------------------------------------------------------------


def test_a_persistent_commit_survives_its_session_and_is_confirmed_from_another(
    router: FakeRouter,
) -> None:
    pending_commit(router, 101, "P1", 60).close()
    pending = router.pending
    assert pending is not None and pending.persist_id == "P1" and pending.owner is None
    other = router.session()
    assert 101 in vlans(router)
    other.confirm("P1")
    assert router.pending is None and 101 in vlans(router)
    idle(router, 120)
    assert 101 in vlans(router)


def test_a_cancel_from_another_session_reverts_running_and_the_candidate(
    router: FakeRouter,
) -> None:
    first = pending_commit(router, 101, "P1", 60)
    first.unlock_candidate()
    router.session().edit_candidate(payload(router, Operation.CREATE, 102))  # lockless
    router.session().cancel("P1")
    assert vlans(router) == set() and not router.candidate_dirty


@pytest.mark.parametrize("ending", ["open", "closed", "dropped", "killed"])
def test_a_pending_commit_is_reverted_at_its_timeout(router: FakeRouter, ending: str) -> None:
    first = pending_commit(router, 101, "P1", 3)
    if ending == "closed":
        first.close()
    elif ending == "dropped":
        first.drop()
    elif ending == "killed":
        router.kill_sessions()
    idle(router, 2)
    assert 101 in vlans(router)
    idle(router, 1)
    assert router.pending is None and vlans(router) == set()
    other = router.session()
    if ending == "open":
        # The committing session keeps its lock over the revert.
        assert refusal(other.lock_candidate).error_tag == "lock-denied"
        first.unlock_candidate()
    other.lock_candidate()
    assert commit_found_nothing(refusal(lambda: other.confirm("P1")))


def test_a_router_read_more_often_than_once_a_second_does_not_revert(router: FakeRouter) -> None:
    pending_commit(router, 101, "P1", 2)
    reader = router.session()
    for _ in range(50):
        idle(router, 0.5)
        reader.running()
    assert router.pending is not None and 101 in vlans(router)
    idle(router, 1)
    assert router.pending is None


def test_the_revert_may_come_up_to_a_second_early(router: FakeRouter) -> None:
    idle(router, 0.9)
    pending_commit(router, 101, "P1", 2)
    idle(router, 1.05)
    assert router.pending is not None
    idle(router, 0.1)  # 1.15 s after the commit, but 2 - 0 on the router's whole seconds
    assert router.pending is None


def test_without_the_idle_check_a_busy_router_reverts_at_the_timeout() -> None:
    router = FakeRouter("cq-vendor", idle_check_s=0)
    pending_commit(router, 101, "P1", 2)
    reader = router.session()
    for _ in range(3):
        idle(router, 1)
        reader.running()
    assert router.pending is None


def test_no_session_gets_the_lock_while_a_commit_is_pending(router: FakeRouter) -> None:
    first = pending_commit(router, 101, "P1", 60)
    first.unlock_candidate()
    other = router.session()
    for session in (first, other):
        refused = refusal(session.lock_candidate)
        assert (refused.error_tag, refused.message) == ("in-use", IN_USE_COMMIT)
        assert refused.retryable
    other.cancel("P1")
    other.lock_candidate()


def test_a_follow_up_joins_the_pending_commit_and_restarts_its_timeout(
    router: FakeRouter,
) -> None:
    router.seed(payload(router, Operation.CREATE, 100))
    first = pending_commit(router, 101, "P1", 10)
    idle(router, 8)
    first.edit_candidate(payload(router, Operation.CREATE, 102))
    first.confirmed_commit_more("P1", 10)
    idle(router, 8)
    assert vlans(router) == {100, 101, 102}
    idle(router, 3)
    assert vlans(router) == {100}  # back to before the first commit


def test_a_follow_up_from_another_session_takes_the_commit_over(router: FakeRouter) -> None:
    first = pending_commit(router, 101, "P1", 60)
    first.unlock_candidate()
    other = router.session()
    other.confirmed_commit_more("P1", 60)
    pending = router.pending
    assert pending is not None and pending.owner == other.session_id


def test_persist_ids_the_router_does_not_hold_are_refused(router: FakeRouter) -> None:
    session = router.session()
    for step in (lambda: session.confirm("P9"), lambda: session.confirmed_commit_more("P9", 5)):
        refused = refusal(step)
        assert CONFIRMED_COMMIT_NOT_ACTIVE in refused.message and commit_found_nothing(refused)
    cancel = refusal(lambda: session.cancel("P9"))
    assert (cancel.error_tag, cancel.message) == ("operation-failed", "operation failed")
    assert cancel_found_nothing(cancel)
    pending_commit(router, 101, "P1", 60).unlock_candidate()
    for step in (
        lambda: session.confirm("P9"),
        lambda: session.confirmed_commit_more("P9", 5),
        lambda: session.cancel("P9"),
    ):
        refused = refusal(step)
        assert (refused.error_tag, refused.message) == ("invalid-value", "invalid value")
    assert cancel_found_nothing(refusal(lambda: session.cancel("P9")))
    again = refusal(lambda: session.confirmed_commit("P1", 5))
    assert (again.error_tag, again.message) == ("operation-failed", "operation failed")
    assert router.pending is not None and router.pending.persist_id == "P1"


def test_a_plain_commit_confirms_only_from_the_committing_session(router: FakeRouter) -> None:
    first = pending_commit(router, 101, "P1", 60)
    first.unlock_candidate()
    other = router.session()
    assert refusal(other.commit).message == IN_USE_COMMIT
    first.commit()
    assert router.pending is None and 101 in vlans(router)


# -- the candidate and its lock ---------------------------------------------------------


def test_an_edit_without_the_lock_is_accepted_and_keeps_the_lock_away_until_discarded(
    router: FakeRouter,
) -> None:
    writer, other = router.session(), router.session()
    writer.edit_candidate(payload(router, Operation.CREATE, 101))
    for session in (writer, other):
        refused = refusal(session.lock_candidate)
        assert refused.error_tag == "resource-denied" and "discard-changes" in refused.message
    other.discard()
    other.lock_candidate()
    other.commit()
    assert vlans(router) == set()


def test_a_confirming_commit_commits_what_another_session_left_in_the_candidate(
    router: FakeRouter,
) -> None:
    pending_commit(router, 101, "P1", 60).unlock_candidate()
    router.session().edit_candidate(payload(router, Operation.CREATE, 102))
    router.session().confirm("P1")
    assert vlans(router) == {101, 102}


def test_another_sessions_lock_stops_writes_and_confirms_but_not_a_cancel(
    router: FakeRouter,
) -> None:
    pending_commit(router, 101, "P1", 60)  # its session keeps the lock
    other = router.session()
    for step in (
        lambda: other.edit_candidate(payload(router, Operation.CREATE, 102)),
        other.discard,
        other.commit,
        other.unlock_candidate,
        lambda: other.confirm("P1"),
        lambda: other.confirmed_commit_more("P1", 60),
    ):
        refused = refusal(step)
        assert (refused.error_tag, refused.message) == (
            "in-use",
            "candidate locked by another session: config locked",
        )
    other.cancel("P1")
    assert vlans(router) == set()


def test_unlock_and_the_end_of_the_lock_holder_discard_the_candidate(router: FakeRouter) -> None:
    first = router.session()
    first.lock_candidate()
    first.edit_candidate(payload(router, Operation.CREATE, 101))
    first.unlock_candidate()
    assert not router.candidate_dirty
    assert refusal(first.unlock_candidate).message == "wrong config state"
    first.lock_candidate()
    first.edit_candidate(payload(router, Operation.CREATE, 101))
    first.close()
    assert router.lock_owner is None and not router.candidate_dirty


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "applied", "session_kept"),
    [
        (Fault.TIMEOUT_BEFORE, FaultKind.TIMEOUT, False, False),
        (Fault.TIMEOUT_AFTER, FaultKind.TIMEOUT, True, False),
        (Fault.DROP_BEFORE, FaultKind.TRANSPORT, False, False),
        (Fault.DROP_AFTER, FaultKind.TRANSPORT, True, False),
        (Fault.RPC_ERROR, FaultKind.RPC_ERROR, False, True),
    ],
)
def test_an_injected_fault_on_a_confirmed_commit(
    router: FakeRouter, fault: Fault, kind: FaultKind, applied: bool, session_kept: bool
) -> None:
    session = router.session()
    session.lock_candidate()
    session.edit_candidate(payload(router, Operation.CREATE, 101))
    opened = session.session_id
    router.fail_next(Step.CONFIRMED_COMMIT, fault, tag="resource-denied", message="no memory")
    failed = refusal(lambda: session.confirmed_commit("P1", 60))
    assert failed.kind is kind and outcome_unknown(failed) is (kind is not FaultKind.RPC_ERROR)
    assert failed.router_name == "edge-1"
    if fault is Fault.RPC_ERROR:
        assert (failed.error_tag, failed.message) == ("resource-denied", "no memory")
    assert (router.pending is not None) is applied and (101 in vlans(router)) is applied
    assert (router.lock_owner == opened) is session_kept
    assert router.calls[-1].step is Step.CONFIRMED_COMMIT
    assert router.calls[-1].applied is applied and router.calls[-1].error == failed.message
    # The next call works, on a new session when the old one is gone (its lock with it).
    session.running()
    assert (session.session_id == opened) is session_kept
    assert router.unused_faults() == []


def test_every_step_can_be_made_to_fail(router: FakeRouter) -> None:
    session = router.session()
    steps: dict[Step, Callable[[], object]] = {
        Step.LOCK: session.lock_candidate,
        Step.UNLOCK: session.unlock_candidate,
        Step.EDIT: lambda: session.edit_candidate(payload(router, Operation.CREATE, 101)),
        Step.DISCARD: session.discard,
        Step.COMMIT: session.commit,
        Step.CONFIRMED_COMMIT: lambda: session.confirmed_commit("P1", 60),
        Step.CONFIRMED_COMMIT_MORE: lambda: session.confirmed_commit_more("P1", 60),
        Step.CONFIRM: lambda: session.confirm("P1"),
        Step.CANCEL: lambda: session.cancel("P1"),
        Step.GET_CONFIG: session.running,
    }
    assert set(steps) == set(Step) - {Step.CONNECT}
    for step, call in steps.items():
        router.fail_next(step, Fault.TIMEOUT_BEFORE)
        failed = refusal(call)
        assert failed.kind is FaultKind.TIMEOUT and failed.message.startswith(step.operation)
    assert router.unused_faults() == [] and vlans(router) == set()


def test_a_session_that_cannot_connect_fails_and_connects_on_the_next_call(
    router: FakeRouter,
) -> None:
    with pytest.raises(ValueError, match="connect"):
        router.fail_next(Step.CONNECT, Fault.RPC_ERROR)
    router.fail_next(Step.CONNECT, Fault.DROP_BEFORE)
    session = router.session()
    assert refusal(session.lock_candidate).kind is FaultKind.TRANSPORT
    assert session.session_id is None and router.lock_owner is None
    session.lock_candidate()
    assert router.lock_owner == session.session_id


def test_a_killed_session_reconnects_silently_without_its_lock(router: FakeRouter) -> None:
    session = router.session()
    session.lock_candidate()
    first_id = session.session_id
    router.kill_sessions()
    assert router.lock_owner is None
    session.running()
    assert session.session_id not in (None, first_id)


def test_faults_queue_per_step(router: FakeRouter) -> None:
    router.fail_next(Step.GET_CONFIG, Fault.RPC_ERROR)
    router.fail_next(Step.GET_CONFIG, Fault.DROP_AFTER)
    router.fail_next(Step.LOCK, Fault.RPC_ERROR)
    session = router.session()
    assert refusal(session.running).kind is FaultKind.RPC_ERROR
    assert router.unused_faults() == [
        (Step.GET_CONFIG, Fault.DROP_AFTER),
        (Step.LOCK, Fault.RPC_ERROR),
    ]
    assert refusal(session.running).kind is FaultKind.TRANSPORT
    session.running()


def test_sessions_of_one_router_share_its_datastores(router: FakeRouter) -> None:
    first, second, third = (router.session() for _ in range(3))
    first.lock_candidate()
    first.edit_candidate(payload(router, Operation.CREATE, 101))
    first.commit()
    for session in (second, third):
        assert running_subinterfaces(router.platform, session.running()).keys() == {
            (INTERFACE[router.platform], 101)
        }
    assert len({s.session_id for s in (first, second, third)}) == 3
