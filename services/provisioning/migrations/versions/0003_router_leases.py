"""Router leases: which agent worker drives each router.

Revision ID: provisioning_0003
Revises: provisioning_0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "provisioning_0003"
down_revision = "provisioning_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_leases",
        sa.Column("router_name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("router_name", name="pk_router_leases"),
    )


def downgrade() -> None:
    op.drop_table("router_leases")
