"""Boosts: their raises and reverts apart from the circuit changes, and what a BOOST line
(and a burst line lowered by a boost) shows.

Revision ID: billing_0011
Revises: billing_0010
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from services.billing.tables import MONEY_LENGTH, AutoId, UtcDateTime

revision = "billing_0011"
down_revision = "billing_0010"
branch_labels = None
depends_on = None

_LINE_COLUMNS = (
    ("samples_in_boost", sa.Integer()),
    ("boost_id", sa.String(length=64)),
    ("boost_base_mbps", sa.BigInteger()),
    ("boost_boosted_mbps", sa.BigInteger()),
    ("boost_booked_start", UtcDateTime()),
    ("boost_booked_end", UtcDateTime()),
    ("boost_billed_start", UtcDateTime()),
    ("boost_billed_end", UtcDateTime()),
    ("boost_started_hours", sa.Integer()),
)


def upgrade() -> None:
    op.create_table(
        "billing_boost_changes",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("boost_id", sa.String(length=64), nullable=False),
        sa.Column("revert", sa.Boolean(), nullable=False),
        sa.Column("effective_time", UtcDateTime(), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=True),
        sa.Column("base_mbps", sa.BigInteger(), nullable=False),
        sa.Column("boosted_mbps", sa.BigInteger(), nullable=False),
        sa.Column("start_time", UtcDateTime(), nullable=False),
        sa.Column("end_time", UtcDateTime(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price_per_mbps_hour", sa.String(length=MONEY_LENGTH), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_boost_changes")),
        sa.UniqueConstraint("event_id", name=op.f("uq_billing_boost_changes_event_id")),
        sa.UniqueConstraint("boost_id", "revert", name="uq_billing_boost_changes_boost"),
    )
    op.create_index(
        op.f("ix_billing_boost_changes_circuit_id"), "billing_boost_changes", ["circuit_id"]
    )
    with op.batch_alter_table("billing_invoice_lines") as batch:
        for name, kind in _LINE_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_invoice_lines") as batch:
        for name, _ in reversed(_LINE_COLUMNS):
            batch.drop_column(name)
    op.drop_table("billing_boost_changes")
