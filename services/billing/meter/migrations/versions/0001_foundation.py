"""Tables every service has: API tokens, transactional outbox, inbox.

Revision ID: meter_0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

from services.common.schema import create_common_tables, drop_common_tables

revision = "meter_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_common_tables(op)


def downgrade() -> None:
    drop_common_tables(op)
