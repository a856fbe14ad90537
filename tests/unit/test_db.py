"""Shared database access: sessions for one-statement reads next to writers (SQLite)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from services.common import db


def test_a_one_statement_read_does_not_wait_for_an_open_write_transaction(
    tmp_path: Path,
) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'read.db'}")
    factory = db.make_session_factory(engine)
    with factory() as session, session.begin():
        session.execute(text("CREATE TABLE t (v INTEGER)"))
        session.execute(text("INSERT INTO t VALUES (1)"))
    reads = db.single_statement_factory(factory)
    with factory() as writer, writer.begin():
        # The writer holds SQLite's write lock (BEGIN IMMEDIATE) until it commits ...
        writer.execute(text("INSERT INTO t VALUES (2)"))
        # ... and a one-statement read still answers, from the last committed state.
        with reads() as reader:
            assert reader.execute(text("SELECT sum(v) FROM t")).scalar_one() == 1
    with reads() as reader:
        assert reader.execute(text("SELECT sum(v) FROM t")).scalar_one() == 3
    engine.dispose()
