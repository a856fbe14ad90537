"""Usage peaks for the samples stored before the peaks table existed.

A month-end run trusts a circuit's peaks row as "all of its valid samples"; samples stored
before migration 0003 are not in it, so they are folded in here, through the same code the
usage consumer calls, a chunk of circuits at a time in the migration's transaction.

Revision ID: billing_0004
Revises: billing_0003
Create Date: 2026-11-26
"""

from typing import Any, cast

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from services.billing.peaks import record_samples
from services.billing.tables import UsageSampleRow

revision = "billing_0004"
down_revision = "billing_0003"
branch_labels = None
depends_on = None

_CHUNK = 20_000


def upgrade() -> None:
    samples = cast(sa.Table, UsageSampleRow.__table__)
    columns = [
        samples.c[name]
        for name in ("circuit_id", "tenant_id", "interval_start", "interval_seconds",
                     "bytes_in", "bytes_out", "valid", "received_at")
    ]
    session = Session(bind=op.get_bind())
    query = sa.select(*columns).where(samples.c.valid).order_by(
        samples.c.circuit_id, samples.c.interval_start
    )
    chunk: list[dict[str, Any]] = []
    for row in session.execute(query.execution_options(yield_per=_CHUNK)).mappings():
        chunk.append(dict(row))
        if len(chunk) >= _CHUNK:
            record_samples(session, chunk)
            chunk = []
    if chunk:
        record_samples(session, chunk)
    session.flush()


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM billing_usage_peaks"))
