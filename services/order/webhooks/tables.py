"""Webhook tables (migration order_0013): subscriptions, the delivery outbox, the attempt log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db import UtcDateTime
from services.order.tables import AutoId, OrderBase

PENDING = "PENDING"
DELIVERED = "DELIVERED"
# Given up after the retry window: the tenant sees it in the log, operators in a metric.
FAILED = "FAILED"


class SubscriptionRow(OrderBase):
    __tablename__ = "webhook_subscriptions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Space-separated event type names.
    event_types: Mapped[str] = mapped_column(Text)
    # The secrets in force (newest first, at most two), sealed like contacts.
    secrets_key_id: Mapped[str] = mapped_column(String(32))
    secrets_nonce: Mapped[bytes] = mapped_column(LargeBinary)
    secrets_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryRow(OrderBase):
    """One event for one subscription; delivered in id order per (subscription, circuit)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_queue", "subscription_id", "circuit_id", "id"),
    )
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(128))
    circuit_id: Mapped[str] = mapped_column(String(40))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    # When the event happened; replays select by it.
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AttemptRow(OrderBase):
    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(AutoId, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    # 0 when no HTTP response came (connection refused, TLS failure, timeout).
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
