"""The token issuer: issued tokens' metadata and the issuer's audit; no token table.

Revision ID: order_0008
Revises: order_0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from services.common.schema import create_token_table, drop_token_table
from services.order.tables import AutoId, UtcDateTime

revision = "order_0008"
down_revision = "order_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_token_table(op)
    op.create_table(
        "issued_tokens",
        sa.Column("token_id", sa.String(40), primary_key=True),
        sa.Column("principal_id", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64)),
        sa.Column("telco", sa.String(16)),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime()),
        sa.Column("issued_by", sa.String(40), nullable=False),
        sa.Column("revoked_by", sa.String(40)),
        sa.Column("replaces", sa.String(40)),
    )
    op.create_index("ix_issued_tokens_principal", "issued_tokens", ["subject", "role"])
    op.create_index("ix_issued_tokens_principal_id", "issued_tokens", ["principal_id"])
    op.create_table(
        "token_audit",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(40), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("token_id", sa.String(40)),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_token_audit_token_id", "token_audit", ["token_id"])


def downgrade() -> None:
    op.drop_table("token_audit")
    op.drop_table("issued_tokens")
    create_token_table(op)
