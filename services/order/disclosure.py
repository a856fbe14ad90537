"""Contacts in and out of the order database: sealed on the way in, opened only for the
principals services.order.domain.disclosure allows.

Which telco bills a tenant comes from the same file the billing service reads
(``IDC_BILLING_ENTITIES_FILE``): the tenant's billing entity and that entity's ``telco``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idc.order.v1 import order_pb2
from services.billing.directory import ENTITIES_ENV, load_directory
from services.common.auth import Principal
from services.common.config import ConfigError
from services.order.contacts import ContactCipher, SealedContacts
from services.order.domain.catalogue import Catalogue
from services.order.domain.disclosure import may_see_contacts
from services.order.tables import OrderRow


def billing_telcos(catalogue: Catalogue) -> Callable[[str], str | None]:
    """Tenant id -> the telco whose ops serve it as biller (None: no telco's ops)."""
    directory = load_directory()
    for entity in directory.entities.values():
        if entity.telco and entity.telco not in catalogue.telcos:
            raise ConfigError(
                f"{ENTITIES_ENV}: billing entity {entity.id} names telco {entity.telco!r}, "
                f"which the order catalogue does not have ({', '.join(sorted(catalogue.telcos))})")

    def billing_telco(tenant_id: str) -> str | None:
        return directory.customer(tenant_id).entity.telco or None

    return billing_telco


def sealed_of(row: Mapping[Any, Any]) -> SealedContacts:
    return SealedContacts(row["contacts_key_id"], bytes(row["contacts_nonce"]),
                          bytes(row["contacts_ciphertext"]))


class ContactVault:
    def __init__(self, cipher: ContactCipher, billing_telco: Callable[[str], str | None]) -> None:
        self.cipher = cipher
        self.billing_telco = billing_telco

    def seal(self, order_id: str, contacts: Sequence[order_pb2.Contact]) -> SealedContacts:
        return self.cipher.seal(order_id, [
            {"role": c.role, "name": c.name, "email": c.email, "phone": c.phone}
            for c in contacts])

    def may_see(self, principal: Principal, tenant_id: str) -> bool:
        return may_see_contacts(principal, tenant_id, self.billing_telco(tenant_id))

    def reveal(self, session: Session, principal: Principal,
               orders: Sequence[order_pb2.Order]) -> None:
        """Fill in the contacts of the orders ``principal`` may see them on (one query)."""
        shown = {order.id: order for order in orders if self.may_see(principal, order.tenant_id)}
        if not shown:
            return
        rows = session.execute(
            select(OrderRow.id, OrderRow.contacts_key_id, OrderRow.contacts_nonce,
                   OrderRow.contacts_ciphertext).where(OrderRow.id.in_(shown))).mappings()
        for row in rows:
            self._open(shown[row["id"]], row)

    def reveal_rows(self, principal: Principal,
                    orders: Sequence[tuple[order_pb2.Order, Mapping[Any, Any]]]) -> None:
        """As :meth:`reveal`, from the ``orders`` columns already read with each order
        (its contacts_* columns): no statement of its own, the read's snapshot."""
        for order, row in orders:
            if self.may_see(principal, order.tenant_id):
                self._open(order, row)

    def _open(self, order: order_pb2.Order, row: Mapping[Any, Any]) -> None:
        del order.contacts[:]
        order.contacts.extend(order_pb2.Contact(**contact)
                              for contact in self.cipher.open(order.id, sealed_of(row)))


def reencrypt(factory: sessionmaker[Session], cipher: ContactCipher, batch_size: int = 200
              ) -> int:
    """Seal again with the active key every order whose contacts another key sealed (after a
    rotation, before that key leaves the set); returns how many. Each batch is one
    transaction; a row that does not open stops the run, naming it."""
    done = 0
    while True:
        with factory() as session, session.begin():
            rows = session.scalars(
                select(OrderRow).where(OrderRow.contacts_key_id != cipher.active_key_id)
                .order_by(OrderRow.id).limit(batch_size).with_for_update()).all()
            for row in rows:
                contacts = cipher.open(row.id, SealedContacts(
                    row.contacts_key_id, row.contacts_nonce, row.contacts_ciphertext))
                for name, value in cipher.seal(row.id, contacts).columns().items():
                    setattr(row, name, value)
        done += len(rows)
        if len(rows) < batch_size:
            return done


def sealed_per_key(factory: sessionmaker[Session]) -> dict[str, int]:
    """How many orders' contacts each key id seals."""
    with factory() as session:
        return {key_id: count for key_id, count in session.execute(
            select(OrderRow.contacts_key_id, func.count()).group_by(OrderRow.contacts_key_id))}
