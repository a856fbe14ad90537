"""Sagas: since when a saga is in its current step (the step-latency metric).

Revision ID: provisioning_0005
Revises: provisioning_0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "provisioning_0005"
down_revision = "provisioning_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sagas") as batch:
        batch.add_column(sa.Column("step_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sagas") as batch:
        batch.drop_column("step_at")
