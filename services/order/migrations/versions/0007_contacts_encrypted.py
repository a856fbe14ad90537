"""Contacts encrypted at rest: the plain JSON column becomes an AES-GCM ciphertext with its
key id and nonce (services/order/contacts.py). Approvals name their approver by principal
id (what goes onto OrderApproved) instead of the subject stored before.

Existing rows are sealed here with the active key of the configured key set
(``IDC_ORDER_CONTACT_KEYS_FILE`` / ``IDC_ORDER_CONTACT_KEYS``, or the development key set
under ``IDC_DEV_MODE=true``); a database with orders and no key set stops the migration,
naming the variable. Downgrade opens them again into the JSON column.

Revision ID: order_0007
Revises: order_0006
Create Date: 2026-12-03
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

from services.order.contacts import ContactCipher, SealedContacts, load_key_set

revision = "order_0007"
down_revision = "order_0006"
branch_labels = None
depends_on = None

_SEALED = ("contacts_key_id", "contacts_nonce", "contacts_ciphertext")


def _orders(*columns: sa.ColumnClause[object]) -> sa.TableClause:
    return sa.table("orders", sa.column("id", sa.String()), *columns)


def _principal_ref(subject: str) -> str:
    # services.common.auth.Principal.ref of a principal known by its subject alone, as of
    # this migration (a migration keeps the formula it was written with).
    return "pr-" + hashlib.sha256(subject.encode()).hexdigest()[:16]


def upgrade() -> None:
    approvals = sa.table("approvals", sa.column("order_id", sa.String()),
                         sa.column("side", sa.String()), sa.column("approver", sa.String()))
    connection = op.get_bind()
    for order_id, side, subject in connection.execute(
            sa.select(approvals.c.order_id, approvals.c.side, approvals.c.approver)
            .where(approvals.c.approver != "")).all():
        connection.execute(approvals.update().where(
            approvals.c.order_id == order_id, approvals.c.side == side)
            .values(approver=_principal_ref(subject)))
    op.add_column("orders", sa.Column("contacts_key_id", sa.String(32)))
    op.add_column("orders", sa.Column("contacts_nonce", sa.LargeBinary()))
    op.add_column("orders", sa.Column("contacts_ciphertext", sa.LargeBinary()))
    orders = _orders(sa.column("contacts", sa.JSON()), sa.column("contacts_key_id", sa.String()),
                     sa.column("contacts_nonce", sa.LargeBinary()),
                     sa.column("contacts_ciphertext", sa.LargeBinary()))
    rows = connection.execute(sa.select(orders.c.id, orders.c.contacts)).all()
    if rows:
        cipher = ContactCipher(load_key_set())
        for order_id, stored in rows:
            # A JSON column may come back as its text.
            contacts = json.loads(stored) if isinstance(stored, str) else stored
            connection.execute(orders.update().where(orders.c.id == order_id).values(
                cipher.seal(order_id, list(contacts or [])).columns()))
    with op.batch_alter_table("orders") as batch:
        for name in _SEALED:
            batch.alter_column(name, nullable=False)
        batch.drop_column("contacts")


def downgrade() -> None:
    """Contacts back to plain JSON; approvers stay principal ids (a subject cannot be had
    back from its id)."""
    op.add_column("orders", sa.Column("contacts", sa.JSON()))
    orders = _orders(sa.column("contacts", sa.JSON()), *(sa.column(n) for n in _SEALED))
    connection = op.get_bind()
    rows = connection.execute(sa.select(orders.c.id, *(orders.c[n] for n in _SEALED))).all()
    if rows:
        cipher = ContactCipher(load_key_set())
        for order_id, key_id, nonce, ciphertext in rows:
            contacts = cipher.open(order_id, SealedContacts(key_id, bytes(nonce),
                                                            bytes(ciphertext)))
            connection.execute(orders.update().where(orders.c.id == order_id)
                               .values(contacts=contacts))
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("contacts", nullable=False)
        for name in _SEALED:
            batch.drop_column(name)
