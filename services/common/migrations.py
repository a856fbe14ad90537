"""The body of every service's Alembic ``env.py``: online migrations with the given metadata.

SQLite needs batch mode for ALTER TABLE, so it is switched on for it. On PostgreSQL the run
holds a transaction-level advisory lock per version table first: processes of one service
started together (billing's API and ingest, ``IDC_BILLING_ROLE``) migrate one after the
other, the later one finding the schema at head.
"""

from __future__ import annotations

import zlib

from alembic import context
from sqlalchemy import MetaData, text

from services.common.db import make_engine


def run_migrations(target_metadata: MetaData | list[MetaData], version_table: str) -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is not set for the migration run")
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=version_table,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": zlib.crc32(version_table.encode())},
                )
            context.run_migrations()
    engine.dispose()
