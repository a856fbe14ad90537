"""Alembic environment of the order service."""

from services.common.db import Base
from services.common.migrations import run_migrations

run_migrations(Base.metadata, version_table="alembic_version_order")
