"""The tenant's webhook use cases; every one is confined to ``tenant_id``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from services.common.errors import FieldViolation, InvalidArgument, NotFound
from services.order.webhooks import domain, store
from services.order.webhooks.tables import AttemptRow, DeliveryRow, SubscriptionRow


class Webhooks:
    def __init__(self, factory: sessionmaker[Session], box: store.SecretBox,
                 clock: Callable[[], datetime]) -> None:
        self._factory = factory
        self._box = box
        self._clock = clock

    def create(self, tenant_id: str, url: str,
               event_types: list[str]) -> tuple[SubscriptionRow, str]:
        """The new subscription and its secret, which is never shown again."""
        with self._factory.begin() as session:
            problems = domain.subscription_problems(
                url, event_types, store.count_subscriptions(session, tenant_id))
            if problems:
                raise InvalidArgument("; ".join(f"{k}: {v}" for k, v in problems.items()),
                                      [FieldViolation(k, v) for k, v in problems.items()])
            row = store.new_subscription(tenant_id, url, event_types, self._clock())
            secret = domain.new_secret()
            self._box.seal_into(row, [secret])
            session.add(row)
            session.flush()
            session.expunge(row)
            return row, secret

    def subscriptions(self, tenant_id: str, after_id: str = "",
                      limit: int | None = None) -> list[SubscriptionRow]:
        with self._factory() as session:
            rows = store.subscriptions(session, tenant_id, after_id, limit)
            session.expunge_all()
            return rows

    def subscription(self, tenant_id: str, subscription_id: str) -> SubscriptionRow:
        with self._factory() as session:
            row = self._own(session, tenant_id, subscription_id)
            session.expunge(row)
            return row

    def delete(self, tenant_id: str, subscription_id: str) -> None:
        with self._factory.begin() as session:
            store.delete_subscription(session, self._own(session, tenant_id, subscription_id))

    def rotate(self, tenant_id: str, subscription_id: str) -> str:
        """The new secret; the previous one stays valid until the next rotation."""
        with self._factory.begin() as session:
            row = self._own(session, tenant_id, subscription_id)
            secret = domain.new_secret()
            self._box.seal_into(row, [secret, *self._box.open(row)[:1]])
            return secret

    def deliveries(self, tenant_id: str, subscription_id: str, limit: int,
                   before_id: int | None) -> list[tuple[DeliveryRow, list[AttemptRow]]]:
        with self._factory() as session:
            self._own(session, tenant_id, subscription_id)
            found = store.deliveries(session, subscription_id, limit, before_id)
            session.expunge_all()
            return found

    def send_test(self, tenant_id: str, subscription_id: str) -> str:
        with self._factory.begin() as session:
            row = self._own(session, tenant_id, subscription_id)
            now = self._clock()
            event_id = str(uuid.uuid4())
            body = domain.event_body(event_id, domain.TEST_EVENT_TYPE, now,
                                     {"tenantId": tenant_id})
            store.enqueue(session, row, store.Event(event_id, domain.TEST_EVENT_TYPE, "",
                                                    body, now), now)
            return event_id

    def replay(self, tenant_id: str, subscription_id: str, since: datetime) -> int:
        with self._factory.begin() as session:
            row = self._own(session, tenant_id, subscription_id)
            return store.replay(session, row, since, self._clock())

    @staticmethod
    def _own(session: Session, tenant_id: str, subscription_id: str) -> SubscriptionRow:
        row = store.subscription(session, tenant_id, subscription_id)
        if row is None:
            raise NotFound(f"no webhook subscription {subscription_id!r}")
        return row
