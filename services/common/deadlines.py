"""The deadline of the call being served, and the places that honour it.

gRPC Python cannot stop a running handler, so the deadline is cooperative: the gRPC
interceptor binds it (``bound``) and the work that takes time checks it.

- A transaction refuses to begin after the deadline, and refuses to commit after it (it
  rolls back): a call answered DEADLINE_EXCEEDED committed nothing, so a client may retry it.
  A call whose commit made it in time answers with its result even when building that
  answer took longer (the client's own deadline may still end it; CreateOrder and the other
  writes are idempotent by request_id for exactly that).
- Waiting for a lock is bounded by the time left: SQLite's busy timeout, PostgreSQL's
  ``statement_timeout`` (a ``SET LOCAL`` at the start of each write transaction).
- Calls to peers get at most the time left (``grpc_server.DefaultDeadline``).
An error raised after the deadline passed is the deadline's doing and is answered as such.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from services.common.errors import DeadlineExceeded

# SQLite's busy timeout outside a call with a deadline (db.py sets the same at connect).
SQLITE_BUSY_TIMEOUT_MS = 30_000

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "idc_deadline", default=None
)


@contextmanager
def bound(timeout_s: float) -> Iterator[None]:
    """The current call must be done within ``timeout_s`` from now."""
    with until(time.monotonic() + timeout_s):
        yield


@contextmanager
def until(deadline: float | None) -> Iterator[None]:
    """Work for the block is bounded by ``deadline`` (``time.monotonic()``; None: unbounded)."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def current() -> float | None:
    """The current call's deadline (``time.monotonic()``), None outside a bounded call."""
    return _deadline.get()


def remaining_s() -> float | None:
    """Seconds left for the current call (never below 0); None outside a bounded call."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def passed() -> bool:
    left = remaining_s()
    return left is not None and left <= 0.0


def check(what: str) -> None:
    """Raise DeadlineExceeded when the current call's deadline has passed."""
    if passed():
        raise DeadlineExceeded(f"the call's deadline passed before {what}; nothing was saved")


def install(engine: Engine) -> None:
    """Make the engine's transactions honour the current call's deadline."""
    if engine.dialect.name == "sqlite":
        # At checkout, before the session's BEGIN IMMEDIATE (which is the wait).
        @event.listens_for(engine, "checkout")
        def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            left = remaining_s()
            timeout_ms = SQLITE_BUSY_TIMEOUT_MS if left is None else _ms(left)
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        check("its transaction began")
        left = remaining_s()
        if left is not None and engine.dialect.name != "sqlite" and \
                connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            # SET LOCAL lasts until the transaction ends: the pooled connection keeps its
            # default afterwards. A read without a transaction is one short statement.
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {_ms(left)}")


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@event.listens_for(Session, "before_commit")
def _refuse_late_commit(session: Session) -> None:
    check("its work was committed")
