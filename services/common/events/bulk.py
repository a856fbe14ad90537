"""Bulk inserts that skip rows already present: the batch consumer's inbox and batch
handlers use them to learn, in one statement, which rows of a batch are new.

On PostgreSQL the rows travel as one JSON document (``INSERT ... SELECT FROM
json_to_recordset``): the statement text is the same for every batch size, so the driver
parses and prepares it once, and the rows are serialised by the json module's C encoder
(a multi-row VALUES list would be a new, long statement per batch, and arrays are dumped
element by element in Python). SQLite gets the plain multi-row
``INSERT ... ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, String, Table, bindparam, cast, column, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_new(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    returning: Sequence[str],
    same: Mapping[str, Any] | None = None,
) -> list[Row[Any]]:
    """Insert ``rows`` (all with the same keys), with the ``same`` values in every row,
    except those whose ``conflict`` columns (a unique constraint) match a row already stored
    or an earlier row of ``rows``; return the ``returning`` columns of the rows inserted. On
    PostgreSQL a conflicting row another transaction is inserting makes this wait for that
    transaction to end."""
    if not rows:
        return []
    same = same or {}
    dialect = session.get_bind().dialect.name
    wanted = [table.c[name] for name in returning]
    if dialect == "postgresql":
        names = list(rows[0])
        document = cast(bindparam("rows", _json(rows), type_=String), postgresql.JSON)
        source = (
            func.json_to_recordset(document)
            .table_valued(*(column(name, table.c[name].type) for name in names))
            .render_derived(with_types=True)
        )
        values = select(
            *(source.c[name] for name in names),
            *(literal(value, table.c[name].type) for name, value in same.items()),
        )
        statement = (
            postgresql.insert(table)
            .from_select([*names, *same], values)
            .on_conflict_do_nothing(index_elements=list(conflict))
            .returning(*wanted)
        )
        return list(session.execute(statement).all())
    if dialect == "sqlite":
        return list(
            session.execute(
                sqlite.insert(table)
                .on_conflict_do_nothing(index_elements=list(conflict))
                .returning(*wanted),
                [{**row, **same} for row in rows],
            )
        )
    raise NotImplementedError(f"bulk inserts support PostgreSQL and SQLite, not {dialect}")


def _json(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value, ensure_ascii=False, separators=(",", ":"))


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # PostgreSQL would read it in the session's time zone.
            raise ValueError("naive datetime given to a bulk insert")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not supported by bulk inserts")
