"""The customer's purchase-order number on each circuit change (printed on invoices).

Revision ID: billing_0009
Revises: billing_0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "billing_0009"
down_revision = "billing_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "billing_circuit_changes",
        sa.Column("purchase_order", sa.String(35), nullable=False, server_default=""),
    )


def downgrade() -> None:
    with op.batch_alter_table("billing_circuit_changes") as batch:
        batch.drop_column("purchase_order")
