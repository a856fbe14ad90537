"""Dead letters replayed through this service's outbox (``idcctl ops dlq replay``).

Revision ID: order_0005
Revises: order_0004
Create Date: 2026-12-02
"""

from alembic import op

from services.common.events.replays import create_replay_table, drop_replay_table

revision = "order_0005"
down_revision = "order_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_replay_table(op)


def downgrade() -> None:
    drop_replay_table(op)
