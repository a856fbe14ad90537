"""Queries over the webhook tables, each in the caller's session (and transaction)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from services.order.contacts import ContactCipher, SealedContacts
from services.order.webhooks.tables import (
    DELIVERED,
    FAILED,
    PENDING,
    AttemptRow,
    DeliveryRow,
    SubscriptionRow,
)


class SecretBox:
    """Seals a subscription's secrets with the contacts' key set (AES-GCM, the row id as
    associated data), so a database dump alone cannot forge signatures."""

    def __init__(self, cipher: ContactCipher) -> None:
        self._cipher = cipher

    def seal_into(self, row: SubscriptionRow, secrets_in_force: list[str]) -> None:
        sealed = self._cipher.seal(row.id, [{"secret": s} for s in secrets_in_force])
        row.secrets_key_id, row.secrets_nonce, row.secrets_ciphertext = (
            sealed.key_id, sealed.nonce, sealed.ciphertext)

    def open(self, row: SubscriptionRow) -> list[str]:
        sealed = SealedContacts(row.secrets_key_id, row.secrets_nonce, row.secrets_ciphertext)
        return [entry["secret"] for entry in self._cipher.open(row.id, sealed)]


def new_subscription(tenant_id: str, url: str, event_types: list[str],
                     now: datetime) -> SubscriptionRow:
    return SubscriptionRow(id="whs-" + uuid.uuid4().hex, tenant_id=tenant_id, url=url,
                           event_types=" ".join(sorted(set(event_types))), created_at=now)


def count_subscriptions(session: Session, tenant_id: str) -> int:
    return session.scalar(select(func.count()).select_from(SubscriptionRow)
                          .where(SubscriptionRow.tenant_id == tenant_id)) or 0


def subscriptions(session: Session, tenant_id: str, after_id: str = "",
                  limit: int | None = None) -> list[SubscriptionRow]:
    """By id (ids are random: a stable order, not creation's), after ``after_id``."""
    return list(session.scalars(select(SubscriptionRow)
                                .where(SubscriptionRow.tenant_id == tenant_id,
                                       SubscriptionRow.id > after_id)
                                .order_by(SubscriptionRow.id).limit(limit)))


def subscription(session: Session, tenant_id: str, subscription_id: str) -> SubscriptionRow | None:
    """None for a missing id and for another tenant's, alike."""
    row = session.get(SubscriptionRow, subscription_id)
    return row if row is not None and row.tenant_id == tenant_id else None


def delete_subscription(session: Session, row: SubscriptionRow) -> None:
    delivery_ids = select(DeliveryRow.id).where(DeliveryRow.subscription_id == row.id)
    session.execute(delete(AttemptRow).where(AttemptRow.delivery_id.in_(delivery_ids)))
    session.execute(delete(DeliveryRow).where(DeliveryRow.subscription_id == row.id))
    session.delete(row)


def subscribers(session: Session, tenant_id: str, event_type: str) -> list[SubscriptionRow]:
    return [row for row in subscriptions(session, tenant_id)
            if event_type in row.event_types.split()]


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    circuit_id: str
    body: bytes
    created_at: datetime


def enqueue(session: Session, row: SubscriptionRow, event: Event, now: datetime) -> DeliveryRow:
    delivery = DeliveryRow(
        subscription_id=row.id, tenant_id=row.tenant_id, event_id=event.event_id,
        event_type=event.event_type, circuit_id=event.circuit_id, body=event.body,
        state=PENDING, attempts=0, created_at=event.created_at, next_attempt_at=now)
    session.add(delivery)
    session.flush()
    return delivery


def next_due(session: Session, now: datetime) -> DeliveryRow | None:
    """The oldest due delivery that heads its (subscription, circuit) queue, locked; rows
    another sender holds are skipped, and so (being pending) still block their queue."""
    earlier = aliased(DeliveryRow)
    blocked = (select(earlier.id)
               .where(earlier.subscription_id == DeliveryRow.subscription_id,
                      earlier.circuit_id == DeliveryRow.circuit_id,
                      earlier.state == PENDING, earlier.id < DeliveryRow.id)
               .exists())
    query = (select(DeliveryRow)
             .where(DeliveryRow.state == PENDING, DeliveryRow.next_attempt_at <= now, ~blocked)
             .order_by(DeliveryRow.id).limit(1)
             .with_for_update(skip_locked=True, of=DeliveryRow))
    return session.scalars(query).first()


def record_attempt(session: Session, delivery: DeliveryRow, now: datetime, status_code: int,
                   error: str, duration_ms: int) -> None:
    delivery.attempts += 1
    if delivery.first_attempt_at is None:
        delivery.first_attempt_at = now
    session.add(AttemptRow(delivery_id=delivery.id, attempt=delivery.attempts, at=now,
                           status_code=status_code, error=error[:2000],
                           duration_ms=duration_ms))


def finish(delivery: DeliveryRow, state: str, now: datetime) -> None:
    assert state in (DELIVERED, FAILED)
    delivery.state = state
    delivery.finished_at = now


def deliveries(session: Session, subscription_id: str, limit: int,
               before_id: int | None) -> list[tuple[DeliveryRow, list[AttemptRow]]]:
    """Newest first, with each delivery's attempts in order."""
    query = select(DeliveryRow).where(DeliveryRow.subscription_id == subscription_id)
    if before_id is not None:
        query = query.where(DeliveryRow.id < before_id)
    rows = list(session.scalars(query.order_by(DeliveryRow.id.desc()).limit(limit)))
    attempts: dict[int, list[AttemptRow]] = {row.id: [] for row in rows}
    for attempt in session.scalars(select(AttemptRow)
                                   .where(AttemptRow.delivery_id.in_(list(attempts)))
                                   .order_by(AttemptRow.id)):
        attempts[attempt.delivery_id].append(attempt)
    return [(row, attempts[row.id]) for row in rows]


def replay(session: Session, row: SubscriptionRow, since: datetime, now: datetime) -> int:
    """Queue again every event of ``row`` that happened at or after ``since``, once each,
    in their first order, with their original event ids."""
    first_of_each = (select(func.min(DeliveryRow.id))
                     .where(DeliveryRow.subscription_id == row.id,
                            DeliveryRow.created_at >= since)
                     .group_by(DeliveryRow.event_id))
    originals = list(session.scalars(select(DeliveryRow)
                                     .where(DeliveryRow.id.in_(first_of_each))
                                     .order_by(DeliveryRow.id)))
    for original in originals:
        enqueue(session, row, Event(original.event_id, original.event_type,
                                    original.circuit_id, original.body, original.created_at),
                now)
    return len(originals)
