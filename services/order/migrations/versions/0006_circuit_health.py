"""Circuit health: the drift provisioning reports per side, summed up on the circuit.

Revision ID: order_0006
Revises: order_0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from services.order.tables import UtcDateTime

revision = "order_0006"
down_revision = "order_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "circuits", sa.Column("health", sa.String(16), nullable=False, server_default="")
    )
    op.add_column("circuits", sa.Column("health_since", UtcDateTime()))
    op.create_table(
        "circuit_drift",
        sa.Column("circuit_id", sa.String(40), nullable=False),
        sa.Column("side", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("since", UtcDateTime(), nullable=False),
        sa.Column("reported_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("circuit_id", "side", name="pk_circuit_drift"),
    )


def downgrade() -> None:
    op.drop_table("circuit_drift")
    with op.batch_alter_table("circuits") as batch:
        batch.drop_column("health_since")
        batch.drop_column("health")
