"""Webhooks: subscriptions, the delivery outbox and its attempt log.

Revision ID: order_0013
Revises: order_0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from services.order.tables import AutoId, UtcDateTime

revision = "order_0013"
down_revision = "order_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("event_types", sa.Text, nullable=False),
        sa.Column("secrets_key_id", sa.String(32), nullable=False),
        sa.Column("secrets_nonce", sa.LargeBinary, nullable=False),
        sa.Column("secrets_ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("circuit_id", sa.String(40), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("first_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["state", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_queue", "webhook_deliveries",
                    ["subscription_id", "circuit_id", "id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", AutoId, nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
