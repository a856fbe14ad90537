"""Usage peaks: per circuit and billing month, what the 95th percentile needs.

Revision ID: billing_0003
Revises: billing_0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from services.billing.tables import UtcDateTime

revision = "billing_0003"
down_revision = "billing_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_usage_peaks",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("first_start", UtcDateTime(), nullable=True),
        sa.Column("last_start", UtcDateTime(), nullable=True),
        sa.Column("last_received", UtcDateTime(), nullable=True),
        sa.Column("top_in", sa.LargeBinary(), nullable=False),
        sa.Column("top_out", sa.LargeBinary(), nullable=False),
        sa.Column("p95_in", sa.LargeBinary(), nullable=False),
        sa.Column("p95_out", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "year", "month", "circuit_id", "time_zone", name=op.f("pk_billing_usage_peaks")
        ),
    )


def downgrade() -> None:
    op.drop_table("billing_usage_peaks")
