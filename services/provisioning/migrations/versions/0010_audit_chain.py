"""The tamper-evident audit: hash-chain links per circuit and each circuit's head.

Revision ID: provisioning_0010
Revises: provisioning_0009
Create Date: 2026-12-03
"""

from alembic import op

from services.common.audit_chain import create_chain_tables, drop_chain_tables

revision = "provisioning_0010"
down_revision = "provisioning_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_chain_tables(op)


def downgrade() -> None:
    drop_chain_tables(op)
