"""Indexes for ListOrders (newest first, by tenant or for staff) and for the reserved
bandwidth admissions sum.

Revision ID: order_0003
Revises: order_0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "order_0003"
down_revision = "order_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_tenant_created", "orders", ["tenant_id", "created_at", "id"])
    op.create_index("ix_orders_created", "orders", ["created_at", "id"])
    # Only open orders hold a reservation: a small partial index for the admission sum.
    op.create_index("ix_orders_reserving", "orders", ["a_port_id", "z_port_id"],
                    postgresql_where=sa.text("reserved_mbps > 0"),
                    sqlite_where=sa.text("reserved_mbps > 0"))


def downgrade() -> None:
    op.drop_index("ix_orders_reserving", "orders")
    op.drop_index("ix_orders_created", "orders")
    op.drop_index("ix_orders_tenant_created", "orders")
