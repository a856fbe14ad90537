"""Sandbox circuits (README "Sandbox"): their changes are kept, flagged, and never invoiced.

Revision ID: billing_0012
Revises: billing_0011
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "billing_0012"
down_revision = "billing_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_circuit_changes") as batch:
        batch.add_column(
            sa.Column("sandbox", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_circuit_changes") as batch:
        batch.drop_column("sandbox")
