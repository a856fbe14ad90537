"""Provisioning tables: agent command queue and batches, sagas, intended circuits, plans, log.

Revision ID: provisioning_0002
Revises: provisioning_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "provisioning_0002"
down_revision = "provisioning_0001"
branch_labels = None
depends_on = None

# Written out rather than taken from tables.py: a migration stays what it was when the
# models move on.
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "agent_commands",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("router_name", sa.String(64), nullable=False),
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("action", sa.Integer(), nullable=False),
        sa.Column("command", sa.LargeBinary(), nullable=False),
        sa.Column("traceparent", sa.String(64), nullable=False),
        _time("received_at"),
        _time("done_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_commands"),
        sa.UniqueConstraint("event_id", name="uq_agent_commands_event_id"),
    )
    op.create_index("ix_agent_commands_router_name", "agent_commands", ["router_name"])
    op.create_table(
        "agent_batches",
        sa.Column("persist_id", sa.String(64), nullable=False),
        sa.Column("router_name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _time("expire_at"),
        sa.Column("members", sa.JSON(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("persist_id", name="pk_agent_batches"),
    )
    op.create_index("ix_agent_batches_router_name", "agent_batches", ["router_name"])
    op.create_table(
        "sagas",
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("operation", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("approved", sa.LargeBinary(), nullable=False),
        _time("deadline", nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("saga_id", name="pk_sagas"),
    )
    op.create_index("ix_sagas_circuit_id", "sagas", ["circuit_id"])
    op.create_index("ix_sagas_step", "sagas", ["step"])
    op.create_table(
        "intended_circuits",
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", sa.LargeBinary(), nullable=False),
        sa.Column("price", sa.LargeBinary(), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("circuit_id", name="pk_intended_circuits"),
    )
    op.create_table(
        "planned_orders",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("operation", sa.Integer(), nullable=False),
        sa.Column("created", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_planned_orders"),
    )
    op.create_table(
        "provisioning_log",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        _time("time"),
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("operation", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("router_name", sa.String(64), nullable=False),
        sa.Column("side", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("persist_id", sa.String(64), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("error", sa.LargeBinary(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provisioning_log"),
    )
    op.create_index("ix_provisioning_log_circuit_id", "provisioning_log", ["circuit_id"])


def downgrade() -> None:
    for table in (
        "provisioning_log",
        "planned_orders",
        "intended_circuits",
        "sagas",
        "agent_batches",
        "agent_commands",
    ):
        op.drop_table(table)
