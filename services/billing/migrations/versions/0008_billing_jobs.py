"""Billing jobs (runs and month-end closes carried out by the service) and close
finalisations (the warnings that stood and who overrode them, why).

Revision ID: billing_0008
Revises: billing_0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from services.billing.tables import UtcDateTime

revision = "billing_0008"
down_revision = "billing_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("progress", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_jobs")),
    )
    with op.batch_alter_table("billing_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_billing_jobs_state", ["state"], unique=False)
    op.create_table(
        "billing_close_finalizations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("months", sa.Text(), nullable=False),
        sa.Column("warnings", sa.Text(), nullable=False),
        sa.Column("override_reason", sa.Text(), nullable=False),
        sa.Column("overridden_by", sa.String(length=200), nullable=False),
        sa.Column("finalized_by", sa.String(length=200), nullable=False),
        sa.Column("invoice_ids", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_close_finalizations")),
    )
    with op.batch_alter_table("billing_close_finalizations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_close_finalizations_job_id"), ["job_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("billing_close_finalizations")
    op.drop_table("billing_jobs")
