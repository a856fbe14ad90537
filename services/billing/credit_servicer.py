# ruff: noqa: N802 - method names are the gRPC contract's
"""The credit note rpcs of idc.billing.v1.BillingService (mixed into BillingServicer), and
the credit balance shown on invoices.

Credit notes are for billing admins (and admins) only: they issue, list, read and export
them. Customers see their effect on their invoices' credit balance.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from idc.billing.v1 import billing_service_pb2 as pb
from idc.billing.v1 import credit_note_pb2, invoice_pb2
from idc.type.v1 import money_pb2
from services.billing import credit_export
from services.billing.credit_notes import CreditNotes, Issue, StoredCreditNote
from services.billing.domain.credit_notes import Balance, CreditRequest, CreditScope
from services.billing.domain.entities import BillingDirectory
from services.billing.domain.money import format_amount, parse_amount, round_money
from services.billing.invoices import StoredInvoice
from services.billing.paging import page_window
from services.common.auth import Role, require_role
from services.common.errors import InvalidArgument

ADMINS = (Role.BILLING_ADMIN, Role.ADMIN)


class CreditNoteRpcs:
    _credits: CreditNotes
    _directory: BillingDirectory

    def IssueCreditNote(
        self, request: credit_note_pb2.IssueCreditNoteRequest, context: Any
    ) -> credit_note_pb2.IssueCreditNoteResponse:
        principal = require_role(*ADMINS)
        if not request.invoice_id:
            raise InvalidArgument.for_field("invoice_id", "is required")
        if request.scope == credit_note_pb2.CREDIT_SCOPE_UNSPECIFIED:
            raise InvalidArgument.for_field("scope", "choose CREDIT_SCOPE_WHOLE, _LINES or _AMOUNT")
        amount, currency = None, ""
        if request.HasField("amount"):
            amount = parse_amount(request.amount.amount, "amount.amount")
            currency = request.amount.currency_code
        issue = Issue(
            invoice_id=request.invoice_id,
            request=CreditRequest(
                scope=CreditScope(request.scope), reason=request.reason,
                line_ids=list(request.line_ids), amount=amount, amount_currency=currency,
            ),
            request_id=request.request_id, issued_by=principal.ref,
        )
        note = self._credits.issue(issue)
        return credit_note_pb2.IssueCreditNoteResponse(credit_note=self._note_proto(note))

    def ListCreditNotes(
        self, request: credit_note_pb2.ListCreditNotesRequest, context: Any
    ) -> credit_note_pb2.ListCreditNotesResponse:
        require_role(*ADMINS)
        notes, next_page_token = self._credits.list(
            request.invoice_id or None, request.tenant_id or None,
            page_window(request.page_size, request.page_token),
        )
        return credit_note_pb2.ListCreditNotesResponse(
            credit_notes=self._notes_proto(notes), next_page_token=next_page_token
        )

    def GetCreditNote(
        self, request: credit_note_pb2.GetCreditNoteRequest, context: Any
    ) -> credit_note_pb2.GetCreditNoteResponse:
        require_role(*ADMINS)
        note = self._credits.get(request.credit_note_id)
        return credit_note_pb2.GetCreditNoteResponse(credit_note=self._note_proto(note))

    def ExportCreditNote(
        self, request: pb.ExportCreditNoteRequest, context: Any
    ) -> pb.ExportCreditNoteResponse:
        require_role(*ADMINS)
        note = self._credits.get(request.credit_note_id)
        stem = credit_export.file_stem(note)
        if request.format == pb.EXPORT_FORMAT_PDF:
            return pb.ExportCreditNoteResponse(
                content=credit_export.to_pdf(
                    note, self._directory.entity(note.billing_entity_id)
                ),
                content_type="application/pdf",
                filename=f"{stem}.pdf",
            )
        if request.format == pb.EXPORT_FORMAT_CSV:
            return pb.ExportCreditNoteResponse(
                content=credit_export.to_csv(note), content_type="text/csv",
                filename=f"{stem}.csv",
            )
        if request.format == pb.EXPORT_FORMAT_JSON:
            text = json_format.MessageToJson(self._note_proto(note))
            return pb.ExportCreditNoteResponse(
                content=text.encode(), content_type="application/json",
                filename=f"{stem}.json",
            )
        raise InvalidArgument.for_field("format", "choose EXPORT_FORMAT_PDF, _CSV or _JSON")

    # -- invoices' credit balance --------------------------------------------------------

    def with_credit_balances(
        self, messages: Iterable[invoice_pb2.Invoice]
    ) -> list[invoice_pb2.Invoice]:
        """The invoices with their credit balance filled in (tenants without credit notes
        keep none)."""
        result = list(messages)
        found = self._credits.balances({message.tenant_id for message in result})
        for message in result:
            balance = found.get(message.id)
            if balance is not None:
                message.credit_balance.CopyFrom(_balance(message.currency_code, balance))
        return result

    def credit_balance(self, invoice: StoredInvoice) -> Balance | None:
        """The invoice's credit balance, for its documents (None: no credit note applies)."""
        return self._credits.balances({invoice.tenant_id}).get(invoice.id)

    def _notes_proto(self, notes: list[StoredCreditNote]) -> list[credit_note_pb2.CreditNote]:
        applied = self._credits.applied_to(notes)
        return [_note(note, applied.get(note.id, "")) for note in notes]

    def _note_proto(self, note: StoredCreditNote) -> credit_note_pb2.CreditNote:
        return self._notes_proto([note])[0]


def _money(currency: str, amount: Decimal) -> money_pb2.Money:
    # In the currency's minor unit: a zero balance reads "0.00", as on the invoice.
    return money_pb2.Money(
        currency_code=currency, amount=format_amount(round_money(amount, currency))
    )


def _balance(currency: str, balance: Balance) -> credit_note_pb2.CreditBalance:
    return credit_note_pb2.CreditBalance(
        brought_forward=_money(currency, balance.brought_forward),
        credit_note_ids=balance.credit_note_ids,
        credits=_money(currency, balance.credits),
        applied=_money(currency, balance.applied),
        amount_due=_money(currency, balance.amount_due),
        carried_forward=_money(currency, balance.carried_forward),
    )


def _note(note: StoredCreditNote, applied_to: str) -> credit_note_pb2.CreditNote:
    currency = note.currency
    issued = Timestamp()
    issued.FromDatetime(note.issued_at)
    return credit_note_pb2.CreditNote(
        id=note.id, number=note.number, invoice_id=note.invoice_id,
        invoice_number=note.invoice_number, tenant_id=note.tenant_id,
        billing_entity_id=note.billing_entity_id,
        scope=credit_note_pb2.CreditScope.ValueType(int(note.scope)), reason=note.reason,
        currency_code=currency,
        lines=[
            credit_note_pb2.CreditNoteLine(
                id=s.id, invoice_line_id=s.line.invoice_line_id, circuit_id=s.line.circuit_id,
                description=s.line.description, amount=_money(currency, s.line.amount),
            )
            for s in note.lines
        ],
        subtotal=_money(currency, note.subtotal), tax_rate=format_amount(note.tax_rate),
        tax=_money(currency, note.tax), total=_money(currency, note.total),
        issue_time=issued, issued_by=note.issued_by, applied_to_invoice_id=applied_to,
        request_id=note.request_id,
    )

