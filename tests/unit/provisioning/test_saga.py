"""Saga decisions: both routers or neither, whatever replies arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.provisioning.domain.circuits import Operation, Side
from services.provisioning.domain.faults import FaultKind, RouterFault
from services.provisioning.domain.saga import (
    Action,
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
    assert sends(saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg", now=NOW)) == [
        (SG, Action.CONFIRM)
    ]
    return saga


def test_happy_path_confirms_singapore_then_chongqing() -> None:
    saga = prepared_saga()
    [confirm_cq] = saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    assert (confirm_cq.side, confirm_cq.action, confirm_cq.persist_id) == (
        CQ,
        Action.CONFIRM,
        "p-cq",
    )
    assert saga.on_reply(CQ, Action.CONFIRM, True, now=NOW) == []
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


def test_first_confirm_failure_rolls_back() -> None:
    saga = prepared_saga()
    assert sends(saga.on_reply(SG, Action.CONFIRM, False, fault=refused(True), now=NOW)) == [
        (SG, Action.ROLLBACK),
        (CQ, Action.ROLLBACK),
    ]


def test_second_confirm_failure_rolls_forward_then_compensates_when_permanent() -> None:
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    timeout = RouterFault(FaultKind.TIMEOUT, "cq-edge-1", "expired", retryable=True)
    assert sends(saga.on_reply(CQ, Action.CONFIRM, False, fault=timeout, now=NOW)) == [
        (CQ, Action.PREPARE)
    ]
    assert sends(saga.on_reply(CQ, Action.PREPARE, True, persist_id="p2", now=NOW)) == [
        (CQ, Action.CONFIRM)
    ]
    assert sends(saga.on_reply(CQ, Action.CONFIRM, False, fault=refused(), now=NOW)) == [
        (SG, Action.ROLLBACK),
        (CQ, Action.ROLLBACK),
    ]


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


def test_recovery_between_the_confirms_rolls_forward() -> None:
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True, now=NOW)
    assert saga.step is Step.CONFIRMING_SECOND
    [confirm] = saga.recover({SG: True, CQ: True})
    assert (confirm.side, confirm.action, confirm.persist_id) == (CQ, Action.CONFIRM, "p-cq")
    # Chongqing's confirmed commit expired while the coordinator was down: prepare again.
    assert sends(saga.recover({SG: True, CQ: False})) == [(CQ, Action.PREPARE)]
    assert saga.side(CQ).persist_id == ""


def test_recovery_before_the_first_confirm() -> None:
    saga = prepared_saga()
    assert sends(saga.recover({SG: True, CQ: True})) == [(SG, Action.CONFIRM)]
    saga = prepared_saga()
    assert sends(saga.recover({SG: False, CQ: True})) == [
        (SG, Action.ROLLBACK),
        (CQ, Action.ROLLBACK),
    ]
    [(side, fault, _)] = saga.faults()
    assert (side, fault.kind, fault.retryable) == (SG, FaultKind.TIMEOUT, True)


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
