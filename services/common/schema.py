"""Alembic operations for the tables every service database has (outbox, inbox; tokens once).

Each service's first migration calls ``create_common_tables``; the shapes live here once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.common.events.tables import create_event_tables, drop_event_tables


def create_common_tables(op: Any) -> None:
    create_token_table(op)
    create_event_tables(op)


def drop_common_tables(op: Any) -> None:
    drop_event_tables(op)
    drop_token_table(op)


def create_token_table(op: Any) -> None:
    """The per-service token table of the first schema; dropped since tokens are signed
    (services/common/tokens.py), each service's ``*_token_table_dropped`` migration."""
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64)),
        sa.Column("telco", sa.String(16)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )


def drop_token_table(op: Any) -> None:
    op.drop_table("api_tokens")
