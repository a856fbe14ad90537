"""The customer's purchase-order number on orders and circuits (billing prints it).

Revision ID: order_0011
Revises: order_0010
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "order_0011"
down_revision = "order_0010"
branch_labels = None
depends_on = None

TABLES = ("orders", "circuits")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("purchase_order", sa.String(35), nullable=False, server_default="")
        )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("purchase_order")
