"""The migrations build exactly the tables the repositories map (on SQLite; the
integration tests run the same migrations on PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from services.common import db
from services.order.app import MIGRATIONS
from services.order.tables import OrderBase


def test_migrated_columns_match_the_mapped_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'order.db'}"
    db.migrate(url, MIGRATIONS)
    engine = db.make_engine(url)
    try:
        inspector = sa.inspect(engine)
        for table in OrderBase.metadata.sorted_tables:
            migrated = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            mapped = {c.name: c.nullable for c in table.columns}
            assert migrated == mapped, table.name
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT name FROM channel_lock")).scalar_one() \
                == "channel"
    finally:
        engine.dispose()
