"""The price book's termination share on quotes, orders and circuits (early termination).

Rows priced before it keep "0": their contracts were sold without an early-termination fee.

Revision ID: order_0012
Revises: order_0011
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "order_0012"
down_revision = "order_0011"
branch_labels = None
depends_on = None

TABLES = ("quotes", "orders", "circuits")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("termination_share", sa.String(32), nullable=False, server_default="0"),
        )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("termination_share")
