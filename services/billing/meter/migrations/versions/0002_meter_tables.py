"""The meter's circuits and last counter readings.

Revision ID: meter_0002
Revises: meter_0001
Create Date: 2026-11-25
"""

from alembic import op

from services.billing.meter.store import create_meter_tables

revision = "meter_0002"
down_revision = "meter_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_meter_tables(op)


def downgrade() -> None:
    op.drop_table("meter_readings")
    op.drop_table("meter_circuits")
