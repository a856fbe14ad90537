"""The tamper-evident audit: hash-chain links per circuit and each circuit's head.

Revision ID: order_audit_chain
Revises: order_four_eyes
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "order_audit_chain"
down_revision = "order_four_eyes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signer_telco", sa.String(16), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("circuit_id", "seq", name="pk_audit_chain"),
    )
    op.create_table(
        "audit_chain_heads",
        sa.Column("circuit_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("circuit_id", name="pk_audit_chain_heads"),
    )


def downgrade() -> None:
    op.drop_table("audit_chain_heads")
    op.drop_table("audit_chain")
