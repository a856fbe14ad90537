"""Alembic environment of the billing service."""

from services.billing.tables import BillingBase
from services.common.db import Base
from services.common.migrations import run_migrations

run_migrations([Base.metadata, BillingBase.metadata], version_table="alembic_version_billing")
