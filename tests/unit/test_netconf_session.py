"""The first exchange of a new NETCONF session (services.common.netconf)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ncclient.operations import RPCError
from ncclient.operations.errors import TimeoutExpiredError

from services.common.netconf import (
    FIRST_REPLY_S,
    SELECT_NOTHING,
    open_session,
    settle_first_exchange,
)


class ScriptedSession:
    """Answers each get-config as scripted: None, or the exception to raise."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.timeout: float = 0.0
        self.asked: list[tuple[float, Any]] = []

    def get_config(self, source: str, filter: Any) -> None:
        assert source == "running"
        self.asked.append((self.timeout, filter))
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


def test_an_answered_first_read_is_the_only_one() -> None:
    session = ScriptedSession(None)
    settle_first_exchange(session, 30.0)  # type: ignore[arg-type]
    assert session.asked == [(FIRST_REPLY_S, SELECT_NOTHING)]
    assert session.timeout == 30.0


def test_an_unanswered_first_read_is_followed_by_a_second_with_the_full_timeout() -> None:
    session = ScriptedSession(TimeoutExpiredError("late"), None)
    settle_first_exchange(session, 30.0)  # type: ignore[arg-type]
    assert session.asked == [(FIRST_REPLY_S, SELECT_NOTHING), (30.0, SELECT_NOTHING)]
    assert session.timeout == 30.0


def test_two_unanswered_reads_raise() -> None:
    session = ScriptedSession(TimeoutExpiredError("late"), TimeoutExpiredError("still"))
    with pytest.raises(TimeoutExpiredError, match="still"):
        settle_first_exchange(session, 30.0)  # type: ignore[arg-type]
    assert session.timeout == 30.0


def test_a_timeout_no_longer_than_the_first_wait_is_not_waited_twice() -> None:
    session = ScriptedSession(TimeoutExpiredError("late"))
    with pytest.raises(TimeoutExpiredError):
        settle_first_exchange(session, 1.0)  # type: ignore[arg-type]
    assert session.asked == [(1.0, SELECT_NOTHING)]


def test_an_rpc_error_is_an_answer() -> None:
    refused = RPCError.__new__(RPCError)
    session = ScriptedSession(refused)
    settle_first_exchange(session, 30.0)  # type: ignore[arg-type]
    assert len(session.asked) == 1


def test_a_known_hosts_path_with_whitespace_is_refused_before_connecting(tmp_path: Path) -> None:
    known = tmp_path / "with space" / "known_hosts"
    with pytest.raises(ValueError, match="known_hosts path must not contain whitespace"):
        open_session(
            host="127.0.0.1",
            port=1,
            username="nobody",
            key_path=tmp_path / "key",
            known_hosts_path=known,
            timeout_s=1.0,
        )
