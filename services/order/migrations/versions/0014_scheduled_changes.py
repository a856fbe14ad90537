"""Scheduled and time-boxed bandwidth: an order's start and end (its reservation's window),
the link between a boost and its revert, the boost price it was sold at, and the revert's
payload hash approved with a boost.

Orders placed before this migration have no window: they take effect once approved.

Revision ID: order_0014
Revises: order_0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from services.order.tables import UtcDateTime

revision = "order_0014"
down_revision = "order_0013"
branch_labels = None
depends_on = None

COLUMNS = ("start_at", "end_at", "revert_order_id", "boost_order_id", "boost_price")


def upgrade() -> None:
    op.add_column("orders", sa.Column("start_at", UtcDateTime()))
    op.add_column("orders", sa.Column("end_at", UtcDateTime()))
    op.add_column("orders", sa.Column("revert_order_id", sa.String(40)))
    op.add_column("orders", sa.Column("boost_order_id", sa.String(40)))
    op.add_column("orders", sa.Column("boost_price", sa.String(32)))
    op.add_column("approvals", sa.Column("revert_payload_sha256", sa.String(64),
                                         nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("revert_payload_sha256")
    with op.batch_alter_table("orders") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
