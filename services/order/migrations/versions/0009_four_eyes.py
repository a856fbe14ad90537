"""Four eyes: every approval decision an entry of its own (append-only).

Revision ID: order_0009
Revises: order_0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from services.order.tables import UtcDateTime

revision = "order_0009"
down_revision = "order_0008"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "approval_decisions",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(40), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("telco_id", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval_decisions"),
    )
    op.create_index(
        "ix_approval_decisions_order_id", "approval_decisions", ["order_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_approval_decisions_order_id", table_name="approval_decisions")
    op.drop_table("approval_decisions")
