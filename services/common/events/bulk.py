"""Bulk inserts that skip rows already present: the batch consumer's inbox and batch
handlers use them to learn, in one statement, which rows of a batch are new.

On PostgreSQL the rows are COPYed into a temporary staging table of the connection (binary
COPY: psycopg encodes the rows in C, four to eight times faster than text COPY here; the
server parses no statement per row), then moved
with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` that empties the stage
in the same statement. The stage is made once per connection and columns (``ON COMMIT
DELETE ROWS``: a transaction that fails or commits leaves it empty; temporary tables are
never vacuumed, so it is truncated rather than left full of deleted rows). That is about
twice as fast as the rows passed as one JSON document, the best single-statement form.
SQLite gets the plain multi-row ``INSERT ... ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import DateTime, Integer, Row, Table, column, delete, literal, select, table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_ORDINAL = "idc_ordinal"
# Column type oids of each stage (the same in every connection: built-in types), which a
# binary COPY needs to pick its encoders.
_STAGE_TYPES: dict[str, list[int]] = {}


def insert_new(
    session: Session,
    table_: Table,
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
    _refuse_naive(table_, list(rows[0]), rows)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _copy_and_insert(session, table_, rows, conflict, returning, same)
    if dialect == "sqlite":
        return list(
            session.execute(
                sqlite.insert(table_)
                .on_conflict_do_nothing(index_elements=list(conflict))
                .returning(*(table_.c[name] for name in returning)),
                [{**row, **same} for row in rows],
            )
        )
    raise NotImplementedError(f"bulk inserts support PostgreSQL and SQLite, not {dialect}")


def _copy_and_insert(
    session: Session,
    target: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    returning: Sequence[str],
    same: Mapping[str, Any],
) -> list[Row[Any]]:
    names = list(rows[0])
    stage = table(
        f"idc_stage_{target.name}_{zlib.crc32(','.join(names).encode()):08x}",
        *(column(name, target.c[name].type) for name in names),
        column(_ORDINAL, Integer),
    )
    listed = ", ".join(f'"{name}"' for name in names)
    # The ordinal keeps the rows' order, so of two conflicting rows the earlier one wins.
    session.execute(text(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{stage.name}" ON COMMIT DELETE ROWS AS '
        f'SELECT {listed}, 0 AS {_ORDINAL} FROM "{target.name}" WITH NO DATA'
    ))
    types = _STAGE_TYPES.get(stage.name)
    if types is None:
        types = _STAGE_TYPES[stage.name] = list(session.scalars(
            text(
                "SELECT atttypid FROM pg_attribute WHERE attrelid = CAST(:stage AS regclass) "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            ),
            {"stage": f'"{stage.name}"'},
        ))
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(
        f'COPY "{stage.name}" ({listed}, {_ORDINAL}) FROM STDIN (FORMAT BINARY)'
    ) as copy:
        copy.set_types(types)
        pick = itemgetter(*names)
        single = len(names) == 1
        for ordinal, row in enumerate(rows):
            copy.write_row((pick(row), ordinal) if single else (*pick(row), ordinal))
    # Emptied by the statement that moves its rows: the next call in this transaction
    # starts from an empty stage.
    staged = delete(stage).returning(*stage.c).cte("staged")
    moved = select(
        *(staged.c[name] for name in names),
        *(literal(value, target.c[name].type) for name, value in same.items()),
    ).order_by(staged.c[_ORDINAL])
    statement = (
        postgresql.insert(target)
        .from_select([*names, *same], moved)
        .on_conflict_do_nothing(index_elements=list(conflict))
        .returning(*(target.c[name] for name in returning))
        .add_cte(staged)
    )
    return list(session.execute(statement).all())


def _refuse_naive(target: Table, names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    # PostgreSQL would read a naive datetime in the session's time zone; SQLite as UTC.
    moments = [name for name in names if _is_datetime(target, name)]
    for row in rows:
        for name in moments:
            value = row[name]
            if value is not None and value.tzinfo is None:
                raise ValueError(f"naive datetime given to a bulk insert ({name})")


def _is_datetime(target: Table, name: str) -> bool:
    kind = target.c[name].type
    return isinstance(getattr(kind, "impl", kind), DateTime)
