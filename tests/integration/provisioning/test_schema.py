"""Migrations 0002 to 0004 build exactly the tables the provisioning service maps, on
SQLite and PostgreSQL, and come down again."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext

from services.common import db
from services.provisioning.app import MIGRATIONS
from services.provisioning.tables import ProvisioningBase

pytestmark = pytest.mark.integration


def test_migrations_match_the_mapped_tables_and_downgrade(database_url: str) -> None:
    db.migrate(database_url, MIGRATIONS)
    engine = db.make_engine(database_url)
    try:
        mapped = set(ProvisioningBase.metadata.tables)

        def ours(item: Any, name: str | None, kind: str, *_: Any) -> bool:
            # Tables of the shared migration (outbox, inbox, tokens) are not mapped here.
            return (name if kind == "table" else item.table.name) in mapped

        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"include_object": ours})
            differences = compare_metadata(context, ProvisioningBase.metadata)
        assert differences == []
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", db.normalise_url(database_url))
        command.downgrade(config, "provisioning_0001")
        assert not mapped & set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
