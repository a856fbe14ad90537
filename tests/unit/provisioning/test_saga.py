"""Saga decisions: both routers or neither, whatever replies arrive."""

from __future__ import annotations

from services.provisioning.circuits import Side
from services.provisioning.faults import FaultKind, RouterFault
from services.provisioning.saga import Action, Saga, Step

SG, CQ = Side.SINGAPORE, Side.CHONGQING


def refused(retryable: bool = False) -> RouterFault:
    return RouterFault(FaultKind.RPC_ERROR, "cq-edge-1", "data exists", retryable=retryable)


def sends(saga_sends: list) -> list[tuple[Side, Action]]:  # type: ignore[type-arg]
    return [(s.side, s.action) for s in saga_sends]


def prepared_saga() -> Saga:
    saga = Saga()
    assert sends(saga.start()) == [(SG, Action.PREPARE), (CQ, Action.PREPARE)]
    assert saga.on_reply(CQ, Action.PREPARE, True, persist_id="p-cq") == []
    assert sends(saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg")) == [
        (SG, Action.CONFIRM)
    ]
    return saga


def test_happy_path_confirms_singapore_then_chongqing() -> None:
    saga = prepared_saga()
    [confirm_cq] = saga.on_reply(SG, Action.CONFIRM, True)
    assert (confirm_cq.side, confirm_cq.action, confirm_cq.persist_id) == (
        CQ,
        Action.CONFIRM,
        "p-cq",
    )
    assert saga.on_reply(CQ, Action.CONFIRM, True) == []
    assert saga.step is Step.DONE


def test_refused_prepare_rolls_both_back_then_fails() -> None:
    saga = Saga()
    saga.start()
    saga.on_reply(SG, Action.PREPARE, True, persist_id="p-sg")
    assert sends(saga.on_reply(CQ, Action.PREPARE, False, fault=refused())) == [
        (SG, Action.ROLLBACK),
        (CQ, Action.ROLLBACK),
    ]
    saga.on_reply(SG, Action.ROLLBACK, True)
    assert saga.step is Step.ROLLING_BACK
    saga.on_reply(CQ, Action.ROLLBACK, True)
    assert saga.step is Step.FAILED
    [(side, fault, rolled_back)] = saga.faults()
    assert (side, fault.message, rolled_back) == (CQ, "data exists", True)


def test_first_confirm_failure_rolls_back() -> None:
    saga = prepared_saga()
    assert sends(saga.on_reply(SG, Action.CONFIRM, False, fault=refused(True))) == [
        (SG, Action.ROLLBACK),
        (CQ, Action.ROLLBACK),
    ]


def test_second_confirm_failure_rolls_forward_then_compensates_when_permanent() -> None:
    saga = prepared_saga()
    saga.on_reply(SG, Action.CONFIRM, True)
    timeout = RouterFault(FaultKind.TIMEOUT, "cq-edge-1", "expired", retryable=True)
    assert sends(saga.on_reply(CQ, Action.CONFIRM, False, fault=timeout)) == [(CQ, Action.PREPARE)]
    assert sends(saga.on_reply(CQ, Action.PREPARE, True, persist_id="p2")) == [(CQ, Action.CONFIRM)]
    assert sends(saga.on_reply(CQ, Action.CONFIRM, False, fault=refused())) == [
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
