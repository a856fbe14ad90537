"""Migration 0002 builds exactly the tables the code maps, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.billing.tables import BillingBase
from services.common import db
from tests.integration.billing.support import migrated

pytestmark = pytest.mark.integration


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    migrated(database_url)
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection), BillingBase.metadata
            )
    finally:
        engine.dispose()
    # Only the billing tables are compared: other tables (tokens, outbox) are not ours.
    ours = [
        d for d in differences
        if not (isinstance(d, tuple) and d[0] == "remove_table")
        and "billing_" in str(d)
    ]
    assert ours == []
