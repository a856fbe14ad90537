"""A call's deadline in the database layer: no transaction begins or commits after it, and
waiting for SQLite's write lock ends with it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from services.common import db, deadlines
from services.common.errors import DeadlineExceeded


def _factory(tmp_path: Path) -> tuple[str, db.sessionmaker[db.Session]]:
    path = tmp_path / "d.db"
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (v INTEGER)"))
    return str(path), db.make_session_factory(engine)


def _rows(factory: db.sessionmaker[db.Session]) -> int:
    with factory() as session:
        return int(session.execute(text("SELECT count(*) FROM t")).scalar_one())


def _wait_until_passed() -> None:
    while not deadlines.passed():
        time.sleep(0.005)


def test_work_past_the_deadline_is_rolled_back_not_committed(tmp_path: Path) -> None:
    _, factory = _factory(tmp_path)
    with deadlines.bound(0.05), pytest.raises(DeadlineExceeded), \
            db.transaction(factory) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        _wait_until_passed()
    assert _rows(factory) == 0
    with deadlines.bound(5.0), db.transaction(factory) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    assert _rows(factory) == 1


def test_no_transaction_begins_after_the_deadline(tmp_path: Path) -> None:
    _, factory = _factory(tmp_path)
    with deadlines.bound(0.01):
        _wait_until_passed()
        with pytest.raises(DeadlineExceeded), db.transaction(factory) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
    assert _rows(factory) == 0


def test_waiting_for_the_write_lock_ends_with_the_deadline(tmp_path: Path) -> None:
    path, factory = _factory(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with deadlines.bound(0.3), pytest.raises(OperationalError, match="locked"), \
                db.transaction(factory) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        assert time.monotonic() - started < 5.0  # not the 30 s busy timeout
    finally:
        holder.rollback()
        holder.close()
    # Outside a call the connection waits as long as before.
    with factory() as session:
        assert session.execute(text("PRAGMA busy_timeout")).scalar_one() \
            == deadlines.SQLITE_BUSY_TIMEOUT_MS


def test_outside_a_call_there_is_no_deadline() -> None:
    assert deadlines.remaining_s() is None
    deadlines.check("anything")
    with deadlines.bound(10.0):
        left = deadlines.remaining_s()
        assert left is not None and 9.0 < left <= 10.0
