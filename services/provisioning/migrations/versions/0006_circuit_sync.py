"""Circuit sync status: the drift watch's view of each circuit end.

Revision ID: provisioning_0006
Revises: provisioning_0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "provisioning_0006"
down_revision = "provisioning_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "circuit_sync",
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("router_name", sa.String(64), nullable=False),
        sa.Column("side", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_in_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported", sa.String(16), nullable=False),
        sa.Column("reported_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("circuit_id", "router_name", name="pk_circuit_sync"),
    )
    op.create_index("ix_circuit_sync_status", "circuit_sync", ["status"])


def downgrade() -> None:
    op.drop_index("ix_circuit_sync_status", table_name="circuit_sync")
    op.drop_table("circuit_sync")
