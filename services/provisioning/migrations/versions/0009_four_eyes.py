"""Four eyes on repairs: repair plans, their payloads and decisions; the actor of every
provisioning log entry.

Revision ID: provisioning_0009
Revises: provisioning_0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "provisioning_0009"
down_revision = "provisioning_0008"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "provisioning_log",
        sa.Column("actor", sa.String(256), nullable=False, server_default=""),
    )
    op.create_table(
        "repair_plans",
        sa.Column("repair_id", sa.String(40), nullable=False),
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("requester_telco", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("repair_id", name="pk_repair_plans"),
    )
    op.create_index("ix_repair_plans_circuit_id", "repair_plans", ["circuit_id"])
    op.create_index("ix_repair_plans_state", "repair_plans", ["state"])
    op.create_table(
        "repair_payloads",
        sa.Column("repair_id", sa.String(40), nullable=False),
        sa.Column("side", sa.Integer(), nullable=False),
        sa.Column("telco_id", sa.String(16), nullable=False),
        sa.Column("router_name", sa.String(64), nullable=False),
        sa.Column("operation", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("repair_id", "side", name="pk_repair_payloads"),
    )
    op.create_table(
        "repair_decisions",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("repair_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("side", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_repair_decisions"),
    )
    op.create_index("ix_repair_decisions_repair_id", "repair_decisions", ["repair_id"])


def downgrade() -> None:
    op.drop_index("ix_repair_decisions_repair_id", table_name="repair_decisions")
    op.drop_table("repair_decisions")
    op.drop_table("repair_payloads")
    op.drop_index("ix_repair_plans_state", table_name="repair_plans")
    op.drop_index("ix_repair_plans_circuit_id", table_name="repair_plans")
    op.drop_table("repair_plans")
    with op.batch_alter_table("provisioning_log") as batch:
        batch.drop_column("actor")
