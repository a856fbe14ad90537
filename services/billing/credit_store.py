"""SQL storage of credit notes (SQLite and PostgreSQL).

Issuing is one transaction that locks the credited invoice's row first: concurrent credit
notes of one invoice run one after the other, each seeing the ones before it, so together
they never credit more than the invoice (on SQLite the write transaction is exclusive).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from services.billing.credit_notes import (
    Issue,
    StoredCreditLine,
    StoredCreditNote,
    issued_credit,
)
from services.billing.domain.credit_notes import (
    BalanceInvoice,
    CreditableLine,
    CreditLine,
    CreditScope,
    EarlierCredits,
    IssuedCredit,
    compute_credit,
)
from services.billing.domain.money import format_amount
from services.billing.domain.rating import BillingMonth
from services.billing.invoices import InvoiceState
from services.billing.tables import (
    CreditNoteLineRow,
    CreditNoteNumberRow,
    CreditNoteRow,
    InvoiceLineRow,
    InvoiceRow,
)
from services.common.db import transaction
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound
from services.common.paging import PageRequest, after, page_of

_NAMESPACE = uuid.UUID("0d6f1c52-4b7e-4f0a-8f64-2a9d3c5e7b21")


class SqlCreditStore:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory

    def issue(
        self, issue: Issue, now: datetime, prefixes: Mapping[str, str]
    ) -> StoredCreditNote:
        with transaction(self._factory) as session:
            invoice = session.scalars(
                select(InvoiceRow).where(InvoiceRow.id == issue.invoice_id).with_for_update()
            ).first()
            if invoice is None:
                raise NotFound(f"invoice {issue.invoice_id} does not exist")
            if invoice.state != InvoiceState.FINALIZED.name:
                raise FailedPrecondition(
                    f"invoice {issue.invoice_id} is {invoice.state}: only a FINALIZED invoice "
                    "is credited (a draft is corrected by running the month again)"
                )
            fingerprint = issue.fingerprint()
            if issue.request_id:
                earlier = _by_request(session, invoice.id, issue.request_id)
                if earlier is not None:
                    if earlier.request_hash != fingerprint:
                        raise AlreadyExists(
                            f"request_id {issue.request_id!r} already issued credit note "
                            f"{earlier.number} with another content; use a new request_id"
                        )
                    return _stored(session, earlier, invoice)
            computed = compute_credit(
                issue.request, _creditable(session, invoice.id), Decimal(invoice.subtotal),
                Decimal(invoice.tax_rate), invoice.currency, _earlier(session, invoice.id),
            )
            prefix = prefixes.get(invoice.billing_entity_id)
            if prefix is None:
                raise FailedPrecondition(
                    f"invoice {invoice.id} is of billing entity {invoice.billing_entity_id}, "
                    "which the billing entities file no longer lists"
                )
            note_id = "cn-" + str(uuid.uuid4())
            local = now.astimezone(ZoneInfo(invoice.time_zone))
            number = _next_number(session, invoice.billing_entity_id)
            row = CreditNoteRow(
                id=note_id, number=f"{prefix}-{local:%Y-%m}-{number:06d}",
                invoice_id=invoice.id, tenant_id=invoice.tenant_id,
                billing_entity_id=invoice.billing_entity_id, scope=issue.request.scope.name,
                reason=issue.request.reason.strip(), currency=invoice.currency,
                subtotal=format_amount(computed.subtotal), tax_rate=invoice.tax_rate,
                tax=format_amount(computed.tax), total=format_amount(computed.total),
                issued_at=now, issued_by=issue.issued_by,
                request_id=issue.request_id or None, request_hash=fingerprint,
            )
            session.add(row)
            session.flush()
            session.add_all(
                CreditNoteLineRow(
                    id="cnl-" + str(uuid.uuid5(_NAMESPACE, f"{note_id}/{position}")),
                    credit_note_id=note_id, position=position,
                    invoice_line_id=line.invoice_line_id, circuit_id=line.circuit_id,
                    description=line.description[:600], amount=format_amount(line.amount),
                )
                for position, line in enumerate(computed.lines)
            )
            session.flush()
            return _stored(session, row, invoice)

    def credit_note(self, credit_note_id: str) -> StoredCreditNote | None:
        with self._factory() as session:
            row = session.get(CreditNoteRow, credit_note_id)
            if row is None:
                return None
            return _stored(session, row, session.get_one(InvoiceRow, row.invoice_id))

    def credit_notes(
        self, invoice_id: str | None, tenant_id: str | None, page: PageRequest
    ) -> tuple[list[StoredCreditNote], str]:
        query = select(CreditNoteRow, InvoiceRow).join(
            InvoiceRow, InvoiceRow.id == CreditNoteRow.invoice_id
        )
        if invoice_id:
            query = query.where(CreditNoteRow.invoice_id == invoice_id)
        if tenant_id:
            query = query.where(CreditNoteRow.tenant_id == tenant_id)
        key = (CreditNoteRow.issued_at, CreditNoteRow.id)
        if page.after is not None:
            query = query.where(after(key, page.after, descending=(True, False)))
        query = query.order_by(CreditNoteRow.issued_at.desc(), CreditNoteRow.id)
        with self._factory() as session:
            rows, next_page_token = page_of(
                session.execute(query.limit(page.limit + 1)).all(), page,
                lambda row: (row[0].issued_at, row[0].id))
            lines = _lines_of(session, [note.id for note, _ in rows])
            return [_from_rows(note, invoice, lines.get(note.id, []))
                    for note, invoice in rows], next_page_token

    def issued_credits(self, tenant_ids: Collection[str]) -> dict[str, list[IssuedCredit]]:
        """The credit notes of these tenants, as their invoices' balances need them."""
        with self._factory() as session:
            rows = session.execute(
                select(
                    CreditNoteRow.tenant_id, CreditNoteRow.id, CreditNoteRow.issued_at,
                    InvoiceRow.time_zone, CreditNoteRow.total,
                )
                .join(InvoiceRow, InvoiceRow.id == CreditNoteRow.invoice_id)
                .where(CreditNoteRow.tenant_id.in_(list(tenant_ids)))
            ).all()
        result: dict[str, list[IssuedCredit]] = defaultdict(list)
        for tenant_id, note_id, issued_at, zone, total in rows:
            result[tenant_id].append(issued_credit(note_id, issued_at, zone, Decimal(total)))
        return dict(result)

    def balance_invoices(self, tenant_ids: Collection[str]) -> dict[str, list[BalanceInvoice]]:
        with self._factory() as session:
            rows = session.execute(
                select(
                    InvoiceRow.tenant_id, InvoiceRow.id, InvoiceRow.year, InvoiceRow.month,
                    InvoiceRow.total, InvoiceRow.finalized_at,
                ).where(InvoiceRow.tenant_id.in_(list(tenant_ids)))
            ).all()
        result: dict[str, list[BalanceInvoice]] = defaultdict(list)
        for tenant_id, invoice_id, year, month, total, finalized in rows:
            result[tenant_id].append(
                BalanceInvoice(invoice_id, BillingMonth(year, month), Decimal(total), finalized)
            )
        return dict(result)


def _by_request(session: Session, invoice_id: str, request_id: str) -> CreditNoteRow | None:
    return session.scalars(
        select(CreditNoteRow).where(
            CreditNoteRow.invoice_id == invoice_id, CreditNoteRow.request_id == request_id
        )
    ).first()


def _creditable(session: Session, invoice_id: str) -> list[CreditableLine]:
    rows = session.execute(
        select(
            InvoiceLineRow.id, InvoiceLineRow.circuit_id, InvoiceLineRow.description,
            InvoiceLineRow.amount,
        )
        .where(InvoiceLineRow.invoice_id == invoice_id)
        .order_by(InvoiceLineRow.position)
    ).all()
    return [CreditableLine(i, c, d, Decimal(a)) for i, c, d, a in rows]


def _earlier(session: Session, invoice_id: str) -> EarlierCredits:
    notes = session.execute(
        select(CreditNoteRow.subtotal, CreditNoteRow.tax).where(
            CreditNoteRow.invoice_id == invoice_id
        )
    ).all()
    lines = session.execute(
        select(CreditNoteLineRow.invoice_line_id, CreditNoteLineRow.amount)
        .join(CreditNoteRow, CreditNoteRow.id == CreditNoteLineRow.credit_note_id)
        .where(CreditNoteRow.invoice_id == invoice_id)
    ).all()
    by_line: dict[str, Decimal] = defaultdict(Decimal)
    for line_id, amount in lines:
        by_line[line_id] += Decimal(amount)
    return EarlierCredits(
        net=sum((Decimal(n) for n, _ in notes), Decimal(0)),
        tax=sum((Decimal(t) for _, t in notes), Decimal(0)),
        by_line=dict(by_line),
        any_amount="" in by_line,
    )


def _next_number(session: Session, entity_id: str) -> int:
    """The entity's next credit note number; the counter row is locked until commit."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(CreditNoteNumberRow)
        .values(billing_entity_id=entity_id, last_number=0)
        .on_conflict_do_nothing(index_elements=["billing_entity_id"])
    )
    counter = session.scalars(
        select(CreditNoteNumberRow)
        .where(CreditNoteNumberRow.billing_entity_id == entity_id)
        .with_for_update()
    ).one()
    counter.last_number += 1
    return counter.last_number


def _lines_of(session: Session, note_ids: list[str]) -> dict[str, list[CreditNoteLineRow]]:
    by_note: dict[str, list[CreditNoteLineRow]] = defaultdict(list)
    for line in session.scalars(
        select(CreditNoteLineRow)
        .where(CreditNoteLineRow.credit_note_id.in_(note_ids))
        .order_by(CreditNoteLineRow.credit_note_id, CreditNoteLineRow.position)
    ):
        by_note[line.credit_note_id].append(line)
    return by_note


def _stored(session: Session, row: CreditNoteRow, invoice: InvoiceRow) -> StoredCreditNote:
    return _from_rows(row, invoice, _lines_of(session, [row.id]).get(row.id, []))


def _from_rows(
    row: CreditNoteRow, invoice: InvoiceRow, lines: list[CreditNoteLineRow]
) -> StoredCreditNote:
    return StoredCreditNote(
        id=row.id, number=row.number, invoice_id=invoice.id,
        invoice_number=invoice.number or "",
        invoice_month=BillingMonth(invoice.year, invoice.month),
        tenant_id=row.tenant_id, billing_entity_id=row.billing_entity_id,
        scope=CreditScope[row.scope], reason=row.reason, currency=row.currency,
        lines=[
            StoredCreditLine(
                r.id, CreditLine(r.invoice_line_id, r.circuit_id, r.description, Decimal(r.amount))
            )
            for r in lines
        ],
        subtotal=Decimal(row.subtotal), tax_rate=Decimal(row.tax_rate), tax=Decimal(row.tax),
        total=Decimal(row.total), issued_at=row.issued_at, issued_by=row.issued_by,
        request_id=row.request_id or "", time_zone=invoice.time_zone,
        issuer_legal_name=invoice.issuer_legal_name, issuer_address=invoice.issuer_address,
        issuer_tax_id=invoice.issuer_tax_id, tax_label=invoice.tax_label,
        customer_legal_name=invoice.customer_legal_name,
        customer_address=invoice.customer_address,
    )
