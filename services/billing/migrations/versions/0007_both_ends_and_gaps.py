"""Both ends metered and gaps kept as gaps: usage samples get their side (unique per
circuit, side and interval), gap volumes get a table, invoice lines the intervals lost to
meter gaps and the two ends' reconciliation.

Samples stored before carry no side: the meter read the Singapore end then
(IDC_METER_SIDE's default and the deployed setting), so they become side 1.

Revision ID: billing_0007
Revises: billing_0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from services.billing.tables import AutoId, UtcDateTime

revision = "billing_0007"
down_revision = "billing_0006"
branch_labels = None
depends_on = None

SINGAPORE = 1


def upgrade() -> None:
    with op.batch_alter_table("billing_usage_samples") as batch:
        batch.add_column(
            sa.Column("side", sa.Integer(), nullable=False, server_default=str(SINGAPORE))
        )
        batch.drop_constraint("uq_billing_usage_interval", type_="unique")
        batch.create_unique_constraint(
            "uq_billing_usage_side_interval", ["circuit_id", "side", "interval_start"]
        )
    with op.batch_alter_table("billing_usage_samples") as batch:
        batch.alter_column("side", server_default=None)
    with op.batch_alter_table("billing_invoice_lines") as batch:
        batch.add_column(sa.Column("intervals_lost", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("reconciliation", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("billing_invoice_lines") as batch:
        batch.alter_column("reconciliation", server_default=None)
    op.create_table(
        "billing_usage_gaps",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("side", sa.Integer(), nullable=False),
        sa.Column("interval_start", UtcDateTime(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("intervals", sa.Integer(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("invalid_reason", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("router_name", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_usage_gaps")),
        sa.UniqueConstraint(
            "circuit_id", "side", "interval_start", name="uq_billing_usage_gaps_start"
        ),
    )


def downgrade() -> None:
    op.drop_table("billing_usage_gaps")
    with op.batch_alter_table("billing_invoice_lines") as batch:
        batch.drop_column("reconciliation")
        batch.drop_column("intervals_lost")
    with op.batch_alter_table("billing_usage_samples") as batch:
        batch.drop_constraint("uq_billing_usage_side_interval", type_="unique")
        batch.create_unique_constraint(
            "uq_billing_usage_interval", ["circuit_id", "interval_start"]
        )
        batch.drop_column("side")
