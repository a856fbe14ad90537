"""Alembic environment of the meter (its own database, its own version table)."""

from services.billing.meter.store import metadata as meter_metadata
from services.common.db import Base
from services.common.migrations import run_migrations

run_migrations([Base.metadata, meter_metadata], version_table="alembic_version_meter")
