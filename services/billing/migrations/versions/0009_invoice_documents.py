"""Invoices an accounts-payable desk accepts: the customer's purchase-order number on each
circuit change, and an invoice's due date fixed on finalisation.

Revision ID: billing_0009
Revises: billing_0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "billing_0009"
down_revision = "billing_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "billing_circuit_changes",
        sa.Column("purchase_order", sa.String(35), nullable=False, server_default=""),
    )
    # Empty for invoices finalised before: their PDF takes the entity's terms as they are.
    op.add_column("billing_invoices", sa.Column("due_date", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_invoices") as batch:
        batch.drop_column("due_date")
    with op.batch_alter_table("billing_circuit_changes") as batch:
        batch.drop_column("purchase_order")
