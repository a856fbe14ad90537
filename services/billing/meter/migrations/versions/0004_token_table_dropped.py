"""Signed tokens: the service keeps no token table any more (services/common/tokens.py).

Revision ID: meter_0004
Revises: meter_0003
Create Date: 2026-12-03
"""

from alembic import op

from services.common.schema import create_token_table, drop_token_table

revision = "meter_0004"
down_revision = "meter_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_token_table(op)


def downgrade() -> None:
    create_token_table(op)
