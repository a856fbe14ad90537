"""Saga decisions: both routers or neither, whatever replies arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.provisioning.domain.circuits import Operation, Side
from services.provisioning.domain.faults import FaultKind, RouterFault
from services.provisioning.domain.saga import (
    MAX_ATTEMPTS,
    Action,
    Held,
    Saga,
    Step,
    extended_deadline,
    repair_operations,
)

SG, CQ = Side.SINGAPORE, Side.CHONGQING
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def refused(retryable: bool = False) -> RouterFault:
    return RouterFault(FaultKind.RPC_ERROR, "cq-edge-1", "data exists", retryable=retryable)


def sends(saga_sends: list) -> list[tuple[Side, Action]]:  # type: ignore[type-arg]
    return [(s.side, s.action) for s in saga_sends]


def prepared_saga() -> Saga:
    saga = Saga()
    assert sends(saga.start()) == [(SG, Action.PREPARE), (CQ, Action.PREPARE)]
    assert saga.on_reply(CQ, Action.PREPARE, True, persist_id="p-cq", now=NOW) == []
    assert saga.decided_at == ""
    both = saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg", now=NOW)
    assert [(s.side, s.action, s.persist_id) for s in both] == [
        (SG, Action.CONFIRM, "p-sg"),
        (CQ, Action.CONFIRM, "p-cq"),
    ], "both routers confirm at once"
    assert (saga.step, saga.decided_at) == (Step.CONFIRMING, NOW.isoformat())
    return saga


def test_happy_path_confirms_both_in_parallel_in_either_order() -> None:
    for first, second in ((SG, CQ), (CQ, SG)):
        saga = prepared_saga()
        assert saga.on_reply(first, Action.CONFIRM, True, now=NOW) == []
        assert saga.step is Step.CONFIRMING
        assert saga.on_reply(second, Action.CONFIRM, True, now=NOW) == []
        assert saga.step is Step.DONE


def test_refused_prepare_rolls_both_back_then_fails() -> None:
    saga = Saga()
    saga.start()
    saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg", now=NOW)
    assert sends(saga.on_reply(CQ, Action.PREPARE, False, fault=refused(), now=NOW)) == [
        (SG, Action.ROLLBACK),
        (CQ, Action.ROLLBACK),
    ]
    saga.on_reply(SG, Action.ROLLBACK, True, now=NOW)
    assert saga.step is Step.ROLLING_BACK
    saga.on_reply(CQ, Action.ROLLBACK, True, now=NOW)
    assert Step(saga.step) is Step.FAILED
    [(side, fault, rolled_back)] = saga.faults()
    assert (side, fault.message, rolled_back) == (CQ, "data exists", True)


def test_a_failed_confirm_after_the_decision_rolls_that_side_forward() -> None:
    # Either side: the decision holds, the failed side is prepared and confirmed again.
    for failing, other in ((SG, CQ), (CQ, SG)):
        saga = prepared_saga()
        timeout = RouterFault(FaultKind.TIMEOUT, "edge", "expired", retryable=True)
        assert sends(saga.on_reply(failing, Action.CONFIRM, False, fault=timeout, now=NOW)) == [
            (failing, Action.PREPARE)
        ]
        assert saga.side(failing).persist_id == ""
        assert saga.on_reply(other, Action.CONFIRM, True, now=NOW) == []
        assert sends(saga.on_reply(failing, Action.PREPARE, True, persist_id="p2", now=NOW)) == [
            (failing, Action.CONFIRM)
        ]
        assert saga.on_reply(failing, Action.CONFIRM, True, now=NOW) == []
        assert saga.step is Step.DONE


def test_a_permanent_refusal_after_the_decision_compensates_the_other_side() -> None:
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    assert sends(saga.on_reply(CQ, Action.CONFIRM, False, fault=refused(), now=NOW)) == [
        (SG, Action.ROLLBACK),
        (CQ, Action.ROLLBACK),
    ]
    assert "chongqing failed after both routers prepared" in saga.reason
    assert saga.reason.endswith("singapore compensated")


def test_rolling_forward_ends_after_its_attempts() -> None:
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    timeout = RouterFault(FaultKind.TIMEOUT, "cq-edge-1", "expired", retryable=True)
    rounds = 0
    while saga.step is Step.CONFIRMING:
        saga.on_reply(CQ, Action.CONFIRM, False, fault=timeout, now=NOW)
        if saga.step is Step.CONFIRMING:
            saga.on_reply(CQ, Action.PREPARE, True, persist_id=f"p{rounds}", now=NOW)
        rounds += 1
        assert rounds < 10
    # Each CONFIRM and PREPARE counts: MAX_ATTEMPTS sends after the first prepare.
    assert rounds == (MAX_ATTEMPTS + 1) // 2
    assert saga.step is Step.ROLLING_BACK and saga.reason.endswith("singapore compensated")


def test_deadline_while_preparing_rolls_back_and_stale_replies_are_ignored() -> None:
    saga = Saga()
    saga.start()
    saga.side(SG).command_id = "cmd-1"
    assert sends(saga.on_deadline()) == [(SG, Action.ROLLBACK), (CQ, Action.ROLLBACK)]
    assert not saga.expects(SG, Action.PREPARE, "cmd-1")
    restored = Saga.from_json(saga.to_json())
    assert restored.to_json() == saga.to_json()


def unreachable() -> RouterFault:
    return RouterFault(FaultKind.TRANSPORT, "cq-edge-1", "connection refused", retryable=True)


def failed_round(saga: Saga, fault: RouterFault, now: datetime = NOW) -> None:
    """Prepare refused on Chongqing with ``fault``, both rollbacks answered at ``now``."""
    saga.start()
    saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg", now=now)
    saga.on_reply(CQ, Action.PREPARE, False, fault=fault, now=now)
    saga.on_reply(SG, Action.ROLLBACK, True, now=now)
    saga.on_reply(CQ, Action.ROLLBACK, True, now=now)


def test_unreachable_router_retries_the_round_within_the_window() -> None:
    saga = Saga(retry_until=(NOW + timedelta(minutes=10)).isoformat())
    failed_round(saga, unreachable())
    assert saga.step is Step.RETRY_WAIT and not saga.finished
    assert saga.backoff_s(2.0) == 2.0
    assert sends(saga.on_deadline()) == [(SG, Action.PREPARE), (CQ, Action.PREPARE)]
    assert (saga.round, saga.step) == (2, Step.PREPARING)
    assert not saga.side(SG).prepared and saga.side(CQ).fault is None
    assert saga.backoff_s(2.0) == 4.0


def test_unreachable_router_fails_once_the_window_has_closed() -> None:
    saga = Saga(retry_until=NOW.isoformat())
    failed_round(saga, unreachable(), now=NOW + timedelta(seconds=1))
    assert saga.step is Step.FAILED
    [(side, fault, rolled_back)] = saga.faults()
    assert (side, fault.kind, rolled_back) == (CQ, FaultKind.TRANSPORT, True)


def test_permanent_refusal_is_not_retried() -> None:
    saga = Saga(retry_until=(NOW + timedelta(minutes=10)).isoformat())
    failed_round(saga, refused())
    assert saga.step is Step.FAILED


def rolling_back() -> Saga:
    """Chongqing refused its prepare; both ROLLBACKs are out."""
    saga = Saga(retry_until=(NOW + timedelta(minutes=10)).isoformat())
    saga.start()
    saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg", now=NOW)
    saga.on_reply(CQ, Action.PREPARE, False, fault=unreachable(), now=NOW)
    return saga


def test_an_unanswered_rollback_is_sent_again_never_given_up_unread() -> None:
    saga = rolling_back()
    saga.on_reply(SG, Action.ROLLBACK, True, now=NOW)
    for _ in range(2 * MAX_ATTEMPTS):
        assert sends(saga.on_deadline()) == [(CQ, Action.ROLLBACK)]
    assert saga.step is Step.ROLLING_BACK


def test_a_silent_sides_rollback_is_settled_by_reading_its_router() -> None:
    saga = rolling_back()
    saga.on_reply(SG, Action.ROLLBACK, True, now=NOW)
    # The router still holds the change (or something else): only an agent can act.
    assert saga.on_router_read(CQ, Held.TARGET, NOW) == []
    assert saga.on_router_read(CQ, Held.OTHER, NOW) == []
    assert saga.side(CQ).awaiting == Action.ROLLBACK.name
    assert saga.on_router_read(CQ, Held.PREVIOUS, NOW) == []
    assert saga.step is Step.RETRY_WAIT and saga.side(CQ).rolled_back


def test_a_silent_sides_confirm_is_settled_by_reading_its_router() -> None:
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    assert saga.on_router_read(CQ, Held.OTHER, NOW) == []
    assert saga.on_router_read(CQ, Held.TARGET, NOW) == []
    assert saga.step is Step.DONE


def test_a_silent_side_that_lost_its_change_after_the_decision_compensates_the_other() -> None:
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    assert sends(saga.on_router_read(CQ, Held.PREVIOUS, NOW)) == [(SG, Action.ROLLBACK)]
    assert "chongqing's agent went silent" in saga.reason
    assert saga.side(CQ).rolled_back and not saga.side(CQ).awaiting
    saga.on_reply(SG, Action.ROLLBACK, True, now=NOW)
    assert saga.step is Step.FAILED, "no retry window in this saga"
    [(side, fault, rolled_back)] = saga.faults()
    assert (side, fault.kind, rolled_back) == (CQ, FaultKind.TIMEOUT, True)


def test_no_retry_when_a_rollback_could_not_be_verified() -> None:
    saga = Saga(retry_until=(NOW + timedelta(minutes=10)).isoformat())
    saga.start()
    saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg", now=NOW)
    saga.on_reply(CQ, Action.PREPARE, False, fault=unreachable(), now=NOW)
    saga.on_reply(CQ, Action.ROLLBACK, True, now=NOW)
    for _ in range(4):
        assert sends(saga.on_reply(SG, Action.ROLLBACK, False, fault=unreachable(), now=NOW))
    assert saga.on_reply(SG, Action.ROLLBACK, False, fault=unreachable(), now=NOW) == []
    assert saga.step is Step.FAILED


def test_recovery_rolls_forward_from_the_recorded_decision() -> None:
    saga = prepared_saga()
    assert sends(saga.recover({SG: True, CQ: True})) == [
        (SG, Action.CONFIRM),
        (CQ, Action.CONFIRM),
    ]
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    [confirm] = saga.recover({SG: True, CQ: True})
    assert (confirm.side, confirm.action, confirm.persist_id) == (CQ, Action.CONFIRM, "p-cq")
    # Both prepares expired while the coordinator was down: prepared again, never rolled back.
    saga = prepared_saga()
    assert sends(saga.recover({SG: False, CQ: False})) == [
        (SG, Action.PREPARE),
        (CQ, Action.PREPARE),
    ]
    assert saga.step is Step.CONFIRMING and saga.side(CQ).persist_id == ""


def test_a_saga_stored_while_the_confirms_were_ordered_carries_on_under_the_decision() -> None:
    saga = prepared_saga()
    stored = saga.to_json()
    for old in ("confirming-first", "confirming-second"):
        stored["step"] = old
        del stored["decided_at"]
        restored = Saga.from_json(stored)
        assert (restored.step, restored.decided_at) == (Step.CONFIRMING, "")
        stored = saga.to_json()


def test_recovery_resends_unanswered_rollbacks_and_leaves_preparing_alone() -> None:
    saga = Saga()
    saga.start()
    assert saga.recover({SG: False, CQ: False}) == []
    saga.on_reply(CQ, Action.PREPARE, False, fault=refused(), now=NOW)
    saga.on_reply(SG, Action.ROLLBACK, True, now=NOW)
    assert sends(saga.recover({SG: False, CQ: False})) == [(CQ, Action.ROLLBACK)]


def test_payload_mismatch_rolls_back_then_asks_for_a_new_approval() -> None:
    saga = Saga(retry_until=(NOW + timedelta(minutes=10)).isoformat())
    mismatch = RouterFault(FaultKind.PAYLOAD_MISMATCH, "cq-edge-1", "differs from the approved")
    failed_round(saga, mismatch)
    assert saga.step is Step.REPLAN and saga.finished


def test_redeploy_creates_where_the_circuit_is_absent_and_replaces_where_present() -> None:
    assert repair_operations({SG: False, CQ: False}) == {
        SG: Operation.CREATE,
        CQ: Operation.CREATE,
    }
    assert repair_operations({SG: True, CQ: False}) == {
        SG: Operation.MODIFY,
        CQ: Operation.CREATE,
    }
    assert repair_operations({SG: True, CQ: True}) == {SG: Operation.MODIFY, CQ: Operation.MODIFY}


def test_a_side_operation_survives_the_saga_state_round_trip() -> None:
    saga = Saga()
    saga.side(CQ).operation = Operation.CREATE.value
    saga.start()
    restored = Saga.from_json(saga.to_json())
    assert restored.side(CQ).operation == Operation.CREATE.value
    assert restored.side(SG).operation == 0
    # State stored before the field existed still loads (the saga's own operation).
    old = saga.to_json()
    for state in old["sides"].values():
        del state["operation"]
    assert Saga.from_json(old).side(CQ).operation == 0


def seconds(n: float) -> datetime:
    return NOW + timedelta(seconds=n)


def test_a_deadline_waits_for_agents_heard_from_lately() -> None:
    # Sent at 0, step deadline 30 s, at most 120 s: both agents answered something at 25 s.
    assert extended_deadline(NOW, seconds(31), [seconds(25), seconds(20)], 30, 120) == seconds(50)


def test_a_deadline_is_not_extended_for_an_agent_not_heard_from() -> None:
    assert extended_deadline(NOW, seconds(31), [seconds(25), None], 30, 120) is None
    assert extended_deadline(NOW, seconds(31), [seconds(25), seconds(0.5)], 30, 120) is None
    assert extended_deadline(NOW, seconds(31), [], 30, 120) is None


def test_a_deadline_is_extended_at_most_to_the_longest_wait() -> None:
    assert extended_deadline(NOW, seconds(100), [seconds(99)], 30, 120) == seconds(120)
    assert extended_deadline(NOW, seconds(121), [seconds(120)], 30, 120) is None


def test_the_awaited_sides_are_those_without_a_reply() -> None:
    saga = Saga()
    saga.start()
    saga.on_reply(CQ, Action.PREPARE, True, persist_id="p-cq", now=NOW)
    assert saga.awaited() == [SG]
