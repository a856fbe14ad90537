"""Bulk inserts that skip present rows (services/common/events/bulk.py), on SQLite and on
real PostgreSQL (binary COPY into a staging table): the rows inserted are returned, a row
matching a stored one or an earlier row of the batch is skipped, the ``same`` values go in
every row, a second call in one transaction starts from an empty stage, and a naive
datetime is refused with nothing written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from services.common import db
from services.common.events.bulk import insert_new
from services.common.events.tables import InboxRow, inbox_table

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
KEY = ["consumer_group", "event_id"]


def inbox(event_id: str, offset: int) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "Test", "topic": "t", "partition": 0,
            "offset": offset}


def test_new_rows_are_inserted_once_and_returned(database_url: str) -> None:
    engine = db.make_engine(database_url)
    inbox_table.metadata.create_all(engine, tables=[inbox_table])
    factory = db.make_session_factory(engine)
    same = {"consumer_group": "g", "processed_at": AT}
    with factory() as session, session.begin():
        first = insert_new(session, inbox_table, [inbox("a", 1), inbox("b", 2)], KEY,
                           ["event_id", "offset"], same)
        assert sorted((row.event_id, row.offset) for row in first) == [("a", 1), ("b", 2)]
        # In the same transaction: "a" is stored, the earlier "c" of the batch wins.
        again = insert_new(session, inbox_table,
                           [inbox("a", 3), inbox("c", 4), inbox("c", 5)], KEY,
                           ["event_id", "offset"], same)
        assert [(row.event_id, row.offset) for row in again] == [("c", 4)]
    with factory() as session, session.begin():
        later = insert_new(session, inbox_table, [inbox("b", 6), inbox("d", 7)], KEY,
                           ["event_id"], same)
        assert [row.event_id for row in later] == ["d"]
        rows = session.execute(select(InboxRow).order_by(InboxRow.event_id)).scalars().all()
        assert [(row.event_id, row.offset, row.consumer_group) for row in rows] == [
            ("a", 1, "g"), ("b", 2, "g"), ("c", 4, "g"), ("d", 7, "g")]
        # SQLite gives this plain DateTime column back naive, in UTC.
        assert {row.processed_at.replace(tzinfo=row.processed_at.tzinfo or UTC)
                for row in rows} == {AT}


def test_a_naive_datetime_is_refused_and_nothing_written(database_url: str) -> None:
    engine = db.make_engine(database_url)
    inbox_table.metadata.create_all(engine, tables=[inbox_table])
    factory = db.make_session_factory(engine)
    rows = [{**inbox("a", 1), "processed_at": AT},
            {**inbox("b", 2), "processed_at": (AT + timedelta(minutes=5)).replace(tzinfo=None)}]
    with factory() as session, session.begin(), pytest.raises(ValueError, match="naive"):
        insert_new(session, inbox_table, rows, KEY, ["event_id"], {"consumer_group": "g"})
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(InboxRow)) == 0
