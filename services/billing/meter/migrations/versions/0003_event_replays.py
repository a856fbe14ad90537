"""Dead letters replayed through this service's outbox (``idcctl ops dlq replay``).

Revision ID: meter_0003
Revises: meter_0002
Create Date: 2026-12-02
"""

from alembic import op

from services.common.events.replays import create_replay_table, drop_replay_table

revision = "meter_0003"
down_revision = "meter_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_replay_table(op)


def downgrade() -> None:
    drop_replay_table(op)
