"""The token issuer's tables in the order database (migration 0008): each issued token's
metadata (never the token) and the record of every call to the issuer."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db import UtcDateTime
from services.order.tables import AutoId, OrderBase


class IssuedTokenRow(OrderBase):
    __tablename__ = "issued_tokens"
    __table_args__ = (Index("ix_issued_tokens_principal", "subject", "role"),)
    token_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(40), index=True)
    subject: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    tenant: Mapped[str | None] = mapped_column(String(64))
    telco: Mapped[str | None] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # From then on refused; a rotation's grace puts it in the future.
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Opaque ids (Principal.ref) of the admins who issued and revoked it.
    issued_by: Mapped[str] = mapped_column(String(40))
    revoked_by: Mapped[str | None] = mapped_column(String(40))
    # The token this one replaced (RotateToken).
    replaces: Mapped[str | None] = mapped_column(String(40))


class TokenAuditRow(OrderBase):
    __tablename__ = "token_audit"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(40), index=True)
    detail: Mapped[str] = mapped_column(Text)
