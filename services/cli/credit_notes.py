"""``idcctl billing credit-note issue|list|show|export``: credit notes of finalised
invoices (billing admin token)."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from rich.console import Console

from idc.billing.v1 import billing_service_pb2 as billing_pb
from idc.billing.v1 import credit_note_pb2
from idc.type.v1 import money_pb2
from services.cli import render
from services.cli.commands import EXPORT_FORMATS, Context, save_document
from services.cli.errors import CliError
from services.cli.render import Result


def show_credit_note(console: Console, note: credit_note_pb2.CreditNote) -> None:
    console.print(render.key_values(f"Credit note {note.number}", [
        ("id", note.id),
        ("credits invoice", f"{note.invoice_number} ({note.invoice_id})"),
        ("tenant", note.tenant_id),
        ("issued", f"{render.when(note.issue_time)} by {note.issued_by}"),
        ("scope", render.enum_name(credit_note_pb2.CreditScope, note.scope, "CREDIT_SCOPE_")),
        ("reason", note.reason),
        ("applied to invoice", note.applied_to_invoice_id or "(the customer's next invoice)"),
    ]))
    console.print(render.table(
        "Credited", ["invoice line", "circuit", "description", "amount"],
        [[line.invoice_line_id, line.circuit_id, line.description, render.money(line.amount)]
         for line in note.lines],
    ))
    console.print(render.key_values("", [
        ("subtotal", render.money(note.subtotal)),
        (f"tax ({note.tax_rate})", render.money(note.tax)),
        ("total credited", render.money(note.total)),
    ]))


def issue(ctx: Context, args: argparse.Namespace) -> Result:
    request = credit_note_pb2.IssueCreditNoteRequest(
        invoice_id=args.invoice_id, reason=args.reason,
        request_id=args.request_id or str(uuid.uuid4()),
    )
    if args.whole:
        request.scope = credit_note_pb2.CREDIT_SCOPE_WHOLE
    elif args.line:
        request.scope = credit_note_pb2.CREDIT_SCOPE_LINES
        request.line_ids.extend(args.line)
    elif args.amount:
        request.scope = credit_note_pb2.CREDIT_SCOPE_AMOUNT
        request.amount.CopyFrom(money_pb2.Money(amount=args.amount))
    else:
        raise CliError("choose --whole, --line LINE_ID (repeatable) or --amount AMOUNT")
    reply = ctx.api.call("billing", ctx.api.billing.IssueCreditNote, request)
    return Result(reply, lambda console: show_credit_note(console, reply.credit_note))


def list_notes(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call("billing", ctx.api.billing.ListCreditNotes,
                         credit_note_pb2.ListCreditNotesRequest(
                             invoice_id=args.invoice or "", tenant_id=args.tenant or "",
                             page_size=args.limit))
    return Result(reply, lambda console: console.print(render.table(
        "Credit notes", ["number", "id", "invoice", "tenant", "issued", "reason", "total"],
        [[n.number, n.id, n.invoice_number, n.tenant_id, render.when(n.issue_time), n.reason,
          render.money(n.total)] for n in reply.credit_notes],
    )))


def show(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call("billing", ctx.api.billing.GetCreditNote,
                         credit_note_pb2.GetCreditNoteRequest(credit_note_id=args.credit_note_id))
    return Result(reply, lambda console: show_credit_note(console, reply.credit_note))


def export(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call("billing", ctx.api.billing.ExportCreditNote,
                         billing_pb.ExportCreditNoteRequest(
                             credit_note_id=args.credit_note_id,
                             format=EXPORT_FORMATS[args.format]))
    return save_document(reply, args.output_file, f"{args.credit_note_id}.{args.format}")


def add_commands(b: Any, billing: Any) -> None:
    """``billing credit-note ...`` (``b``: main._Builder)."""
    notes = b.group(billing, "credit-note", "credit notes of finalised invoices")
    p = b.leaf(
        notes, "issue", issue, "credit a finalised invoice in part or whole",
        "Credit a FINALIZED invoice: --whole (all still creditable), --line LINE_ID\n"
        "(repeatable; each line for what is left on it) or --amount AMOUNT (net, before\n"
        "tax, in the invoice's currency). Never more than is left to credit.",
    )
    p.add_argument("invoice_id")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--whole", action="store_true", help="everything still creditable")
    scope.add_argument("--line", action="append", metavar="LINE_ID", help="an invoice line")
    scope.add_argument("--amount", help="a net amount, e.g. 100.00")
    p.add_argument("--reason", required=True, help="why (printed on the credit note)")
    p.add_argument("--request-id", help="repeat a request safely (default: a new id)")
    p.set_defaults(target_service="billing")
    p = b.leaf(notes, "list", list_notes, "credit notes, newest first")
    p.add_argument("--invoice", help="only those of this invoice")
    p.add_argument("--tenant", help="only this tenant's")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(target_service="billing")
    p = b.leaf(notes, "show", show, "one credit note with its lines")
    p.add_argument("credit_note_id")
    p.set_defaults(target_service="billing")
    p = b.leaf(notes, "export", export, "download a credit note as PDF, CSV or JSON")
    p.add_argument("credit_note_id")
    p.add_argument("--format", choices=sorted(EXPORT_FORMATS), default="pdf")
    p.add_argument("--file", dest="output_file", metavar="PATH",
                   help="where to write it (a file or a directory)")
    p.set_defaults(target_service="billing")
