"""Provisioning progress of an order: when it was handed to provisioning, and the last step
provisioning reported. Orders approved before this migration get their approval time from
the audit trail, so the overdue alarm sees them too.

Revision ID: order_0004
Revises: order_0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from services.order.tables import UtcDateTime

revision = "order_0004"
down_revision = "order_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("approved_at", UtcDateTime()))
    op.add_column("orders", sa.Column("provisioning_step", sa.String(64)))
    op.add_column("orders", sa.Column("provisioning_step_at", UtcDateTime()))
    op.execute(
        "UPDATE orders SET approved_at = (SELECT MAX(a.at) FROM order_audit a "
        "WHERE a.order_id = orders.id AND a.to_state = 'APPROVED') "
        "WHERE state IN ('APPROVED', 'IN_PROGRESS')"
    )


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("provisioning_step_at")
        batch.drop_column("provisioning_step")
        batch.drop_column("approved_at")
