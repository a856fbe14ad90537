"""Credit notes as the application sees them: issue one on a finalised invoice, read them,
and the credit balance they bring to the customer's invoices.

The arithmetic is domain/credit_notes.py; storage (one transaction per issue, the invoice
row locked so concurrent notes never over-credit) is credit_store.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from services.billing.domain.credit_notes import (
    Balance,
    BalanceInvoice,
    CreditLine,
    CreditRequest,
    CreditScope,
    IssuedCredit,
    balances,
    target_invoice,
)
from services.billing.domain.entities import BillingDirectory
from services.billing.domain.money import format_amount
from services.billing.domain.rating import BillingMonth
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import PageRequest


@dataclass(frozen=True)
class StoredCreditLine:
    id: str
    line: CreditLine


@dataclass(frozen=True)
class StoredCreditNote:
    id: str
    number: str
    invoice_id: str
    invoice_number: str
    invoice_month: BillingMonth
    tenant_id: str
    billing_entity_id: str
    scope: CreditScope
    reason: str
    currency: str
    lines: list[StoredCreditLine]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal
    issued_at: datetime
    issued_by: str
    request_id: str
    time_zone: str
    issuer_legal_name: str
    issuer_address: str
    issuer_tax_id: str
    tax_label: str
    customer_legal_name: str
    customer_address: str

    def as_issued(self) -> IssuedCredit:
        return issued_credit(self.id, self.issued_at, self.time_zone, self.total)


def issued_credit(
    credit_note_id: str, issued_at: datetime, time_zone: str, total: Decimal
) -> IssuedCredit:
    """A credit note for the balance; its month is that of its issue in the customer's
    billing time zone (the credited invoice's)."""
    local = issued_at.astimezone(ZoneInfo(time_zone))
    return IssuedCredit(credit_note_id, BillingMonth(local.year, local.month), issued_at, total)


@dataclass(frozen=True)
class Issue:
    """One IssueCreditNote call, validated."""

    invoice_id: str
    request: CreditRequest
    request_id: str
    issued_by: str

    def fingerprint(self) -> str:
        request = self.request
        payload = [
            self.invoice_id, int(request.scope), request.reason, list(request.line_ids),
            None if request.amount is None else format_amount(request.amount),
            request.amount_currency,
        ]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


class CreditStore(Protocol):
    def issue(
        self, issue: Issue, now: datetime, prefixes: Mapping[str, str]
    ) -> StoredCreditNote: ...

    def credit_note(self, credit_note_id: str) -> StoredCreditNote | None: ...

    def credit_notes(
        self, invoice_id: str | None, tenant_id: str | None, page: PageRequest
    ) -> tuple[list[StoredCreditNote], str]: ...

    def issued_credits(self, tenant_ids: Collection[str]) -> dict[str, list[IssuedCredit]]: ...

    def balance_invoices(
        self, tenant_ids: Collection[str]
    ) -> dict[str, list[BalanceInvoice]]: ...


MAX_REASON = 500

log = logging.getLogger(__name__)


class CreditNotes:
    def __init__(
        self, store: CreditStore, directory: BillingDirectory, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock

    def issue(self, issue: Issue) -> StoredCreditNote:
        if len(issue.request.reason) > MAX_REASON:
            raise InvalidArgument.for_field("reason", f"is longer than {MAX_REASON} characters")
        if len(issue.request_id) > 64:
            raise InvalidArgument.for_field("request_id", "is longer than 64 characters")
        # Credit notes are numbered per billing entity like invoices, "<prefix>-CN-...".
        prefixes = {
            entity_id: f"{entity.invoice_prefix}-CN"
            for entity_id, entity in self._directory.entities.items()
        }
        note = self._store.issue(issue, self._clock(), prefixes)
        log.info(
            "credit note %s (%s) on invoice %s: %s %s credited by %s (%s)", note.number,
            note.scope.name, note.invoice_number, format_amount(note.total), note.currency,
            note.issued_by, note.reason,
        )
        return note

    def get(self, credit_note_id: str) -> StoredCreditNote:
        if not credit_note_id:
            raise InvalidArgument.for_field("credit_note_id", "is required")
        note = self._store.credit_note(credit_note_id)
        if note is None:
            raise NotFound(f"credit note {credit_note_id} does not exist")
        return note

    def list(
        self, invoice_id: str | None, tenant_id: str | None, page: PageRequest
    ) -> tuple[list[StoredCreditNote], str]:
        """One page of credit notes, newest first, and the next page's token."""
        return self._store.credit_notes(invoice_id, tenant_id, page)

    def balances(self, tenant_ids: Collection[str]) -> dict[str, Balance]:
        """The credit balance of every invoice of these tenants that have credit notes, by
        invoice id (two queries whatever the number of tenants)."""
        credits = self._store.issued_credits(tenant_ids)
        if not credits:
            return {}
        invoices = self._store.balance_invoices(credits.keys())
        result: dict[str, Balance] = {}
        for tenant_id, issued in credits.items():
            result |= balances(invoices.get(tenant_id, []), issued)
        return result

    def applied_to(self, notes: Sequence[StoredCreditNote]) -> dict[str, str]:
        """Credit note id -> the invoice whose balance takes it (absent: none yet)."""
        invoices = self._store.balance_invoices({note.tenant_id for note in notes})
        result: dict[str, str] = {}
        for note in notes:
            target = target_invoice(note.as_issued(), invoices.get(note.tenant_id, []))
            if target is not None:
                result[note.id] = target.invoice_id
        return result

