"""Signed tokens: the service keeps no token table any more (services/common/tokens.py).

Revision ID: provisioning_0008
Revises: provisioning_0007
Create Date: 2026-12-03
"""

from alembic import op

from services.common.schema import create_token_table, drop_token_table

revision = "provisioning_0008"
down_revision = "provisioning_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_token_table(op)


def downgrade() -> None:
    create_token_table(op)
