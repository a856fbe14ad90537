"""Credit notes over gRPC on the real database: partial and whole credits to the cent, own
numbers, never over-credited (racing requests too), documents, the next invoice's balance."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import pypdfium2  # type: ignore[import-untyped]
import pytest
from rich.console import Console

from idc.billing.v1 import billing_service_pb2 as pb
from idc.billing.v1 import billing_service_pb2_grpc, credit_note_pb2, invoice_pb2
from idc.type.v1 import money_pb2, year_month_pb2
from services.cli import main as cli
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata
from services.common.tokens import HarnessKeys
from tests.integration.billing.support import (
    Clock,
    activated,
    billing_servicer,
    ingest_directly,
    migrated,
    price,
    sample,
    serve_billing,
)

pytestmark = pytest.mark.integration

MARCH = year_month_pb2.YearMonth(year=2025, month=3)
APRIL = year_month_pb2.YearMonth(year=2025, month=4)
BYTES_PER_MBPS = 37_500_000
WHOLE, LINES, AMOUNT = (
    credit_note_pb2.CREDIT_SCOPE_WHOLE, credit_note_pb2.CREDIT_SCOPE_LINES,
    credit_note_pb2.CREDIT_SCOPE_AMOUNT,
)


@dataclass
class Billing:
    stub: billing_service_pb2_grpc.BillingServiceStub
    tokens: dict[str, str]
    clock: Clock
    march: invoice_pb2.Invoice
    address: str

    def as_(self, who: str) -> list[tuple[str, str]]:
        return call_metadata(self.tokens[who])

    def issue(self, who: str = "admin", **fields: object) -> credit_note_pb2.CreditNote:
        fields.setdefault("invoice_id", self.march.id)
        fields.setdefault("reason", "service credit")
        response = self.stub.IssueCreditNote(
            credit_note_pb2.IssueCreditNoteRequest(**fields), metadata=self.as_(who), timeout=30
        )
        return response.credit_note

    def run(self, month: year_month_pb2.YearMonth) -> pb.BillingSummary:
        messages = list(self.stub.RunBillingCycle(
            pb.RunBillingCycleRequest(month=month), metadata=self.as_("admin"), timeout=60
        ))
        return messages[-1].summary


@pytest.fixture
def billing(database_url: str) -> Iterator[Billing]:
    """acme-sg's March 2025 invoice, FINALIZED: MRC 3100.00 and burst 370.00 (40 samples,
    p95 137 Mbps over a CIR of 100 at 10.00), subtotal 3470.00, GST 9 % 312.30, 3782.30."""
    factory = migrated(database_url)
    clock = Clock(datetime(2025, 3, 1, tzinfo=UTC))
    ingest_directly(factory, clock, [
        activated("c-sg", "acme-sg", datetime(2025, 2, 1, tzinfo=UTC), 100,
                  price("SGD", "3100.00", "0", "10.00")),
        *(sample("c-sg", "acme-sg", datetime(2025, 3, 5, tzinfo=UTC) + timedelta(minutes=5 * i),
                 BYTES_PER_MBPS * (100 + i), BYTES_PER_MBPS * 20) for i in range(40)),
    ])
    clock.now = datetime(2025, 4, 2, tzinfo=UTC)
    servicer, runner = billing_servicer(factory, clock)
    keys = HarnessKeys.generate()
    tokens = {
        "admin": keys.mint(Principal("billing@idc", Role.BILLING_ADMIN)),
        "acme": keys.mint(Principal("ops@acme", Role.CUSTOMER, tenant="acme-sg")),
    }
    with serve_billing(servicer, runner, database_url, keys) as (stub, address):
        billing = Billing(stub, tokens, clock, invoice_pb2.Invoice(), address)
        summary = billing.run(MARCH)
        (invoice_id,) = summary.invoice_ids
        with pytest.raises(grpc.RpcError) as draft:
            billing.issue(invoice_id=invoice_id, scope=WHOLE)
        assert draft.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "only a FINALIZED invoice" in (draft.value.details() or "")
        billing.march = stub.FinalizeInvoice(
            pb.FinalizeInvoiceRequest(invoice_id=invoice_id), metadata=billing.as_("admin"),
            timeout=30,
        ).invoice
        assert billing.march.total.amount == "3782.30"
        yield billing


def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    assert error.value.code() == code, error.value.details()
    return error.value.details() or ""


def sgd(amount: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code="SGD", amount=amount)


def test_partial_then_whole_credit_to_the_cent_and_the_next_invoice_balance(
    billing: Billing,
) -> None:
    burst = next(
        line for line in billing.march.lines if line.kind == invoice_pb2.INVOICE_LINE_KIND_BURST
    )
    refused(lambda: billing.issue("acme", scope=WHOLE), grpc.StatusCode.PERMISSION_DENIED)
    refused(lambda: billing.issue(invoice_id="inv-none", scope=WHOLE), grpc.StatusCode.NOT_FOUND)
    assert "scope" in refused(billing.issue, grpc.StatusCode.INVALID_ARGUMENT)
    assert "reason" in refused(lambda: billing.issue(scope=WHOLE, reason=""),
                               grpc.StatusCode.INVALID_ARGUMENT)
    refused(lambda: billing.stub.ListCreditNotes(
        credit_note_pb2.ListCreditNotesRequest(), metadata=billing.as_("acme"), timeout=30
    ), grpc.StatusCode.PERMISSION_DENIED)
    # The burst line: 370.00 + GST 33.30 = 403.30, the entity's first credit note.
    first = billing.issue(scope=LINES, line_ids=[burst.id], reason="burst during an outage",
                          request_id="r-1")
    assert (first.number, first.invoice_number) == ("SG-CN-2025-04-000001", billing.march.number)
    assert [(x.invoice_line_id, x.amount.amount) for x in first.lines] == [(burst.id, "370.00")]
    assert (first.subtotal.amount, first.tax.amount, first.total.amount) == (
        "370.00", "33.30", "403.30"
    )
    assert billing.issue(scope=LINES, line_ids=[burst.id], reason="burst during an outage",
                         request_id="r-1").id == first.id
    assert "r-1" in refused(lambda: billing.issue(scope=WHOLE, request_id="r-1"),
                            grpc.StatusCode.ALREADY_EXISTS)
    assert "nothing left" in refused(
        lambda: billing.issue(scope=LINES, line_ids=[burst.id]),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    refused(lambda: billing.issue(scope=AMOUNT, amount=sgd("10.005")),
            grpc.StatusCode.INVALID_ARGUMENT)
    assert "3100.00 SGD net still creditable" in refused(
        lambda: billing.issue(scope=AMOUNT, amount=sgd("3100.01")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    billing.clock.advance(minutes=1)
    # 1000.00: tax round(1370.00 * 0.09) - 33.30 = 123.30 - 33.30 = 90.00.
    second = billing.issue(scope=AMOUNT, amount=sgd("1000.00"), reason="goodwill")
    assert (second.number, second.tax.amount, second.total.amount) == (
        "SG-CN-2025-04-000002", "90.00", "1090.00"
    )
    billing.clock.advance(minutes=1)
    # The rest: 2100.00 net, tax 312.30 - 123.30 = 189.00: the three credit 3782.30 in all.
    rest = billing.issue(scope=WHOLE, reason="contract cancelled")
    assert [x.amount.amount for x in rest.lines] == ["2100.00"]
    assert (rest.subtotal.amount, rest.tax.amount, rest.total.amount) == (
        "2100.00", "189.00", "2289.00"
    )
    notes = [first, second, rest]
    assert sum(Decimal(n.total.amount) for n in notes) == Decimal(billing.march.total.amount)
    assert sum(Decimal(n.tax.amount) for n in notes) == Decimal(billing.march.tax.amount)
    refused(lambda: billing.issue(scope=WHOLE), grpc.StatusCode.FAILED_PRECONDITION)
    listed = billing.stub.ListCreditNotes(
        credit_note_pb2.ListCreditNotesRequest(invoice_id=billing.march.id, page_size=2),
        metadata=billing.as_("admin"), timeout=30,
    )
    assert [n.id for n in listed.credit_notes] == [rest.id, second.id]
    assert listed.next_page_token
    check_documents(billing, first)
    # April's invoice (MRC 3100.00 + GST 279.00 = 3379.00) takes the notes issued in April.
    billing.clock.now = datetime(2025, 5, 2, tzinfo=UTC)
    (april_id,) = billing.run(APRIL).invoice_ids
    april = billing.stub.FinalizeInvoice(
        pb.FinalizeInvoiceRequest(invoice_id=april_id), metadata=billing.as_("admin"),
        timeout=30,
    ).invoice
    assert april.total.amount == "3379.00"
    seen = billing.stub.GetInvoice(
        pb.GetInvoiceRequest(invoice_id=april_id), metadata=billing.as_("acme"), timeout=30
    ).invoice
    balance = seen.credit_balance
    assert list(balance.credit_note_ids) == [first.id, second.id, rest.id]
    assert (balance.brought_forward.amount, balance.credits.amount, balance.applied.amount,
            balance.amount_due.amount, balance.carried_forward.amount) == (
        "0.00", "3782.30", "3379.00", "0.00", "403.30"
    )
    exported = json.loads(billing.stub.ExportInvoice(
        pb.ExportInvoiceRequest(invoice_id=april_id, format=pb.EXPORT_FORMAT_JSON),
        metadata=billing.as_("acme"), timeout=30,
    ).content)
    assert exported["creditBalance"]["amountDue"]["amount"] == "0.00"
    assert exported["creditBalance"]["carriedForward"]["amount"] == "403.30"
    march = billing.stub.GetInvoice(
        pb.GetInvoiceRequest(invoice_id=billing.march.id), metadata=billing.as_("acme"),
        timeout=30,
    ).invoice
    assert march.credit_balance.applied.amount == "0.00"
    assert march.total.amount == "3782.30"  # the finalised invoice itself is unchanged
    shown = billing.stub.GetCreditNote(
        credit_note_pb2.GetCreditNoteRequest(credit_note_id=rest.id),
        metadata=billing.as_("admin"), timeout=30,
    ).credit_note
    assert shown.applied_to_invoice_id == april_id


def check_documents(billing: Billing, note: credit_note_pb2.CreditNote) -> None:
    def export(kind: pb.ExportFormat.ValueType) -> pb.ExportCreditNoteResponse:
        return billing.stub.ExportCreditNote(
            pb.ExportCreditNoteRequest(credit_note_id=note.id, format=kind),
            metadata=billing.as_("admin"), timeout=30,
        )

    rows = list(csv.DictReader(io.StringIO(export(pb.EXPORT_FORMAT_CSV).content.decode())))
    lines = [r for r in rows if r["row"] == "line"]
    assert sum(Decimal(r["amount"]) for r in lines) == Decimal(note.subtotal.amount)
    summary = {r["row"]: r["summary_amount"] for r in rows if r["row"] != "line"}
    assert summary == {"subtotal": "370.00", "tax 0.09": "33.30", "total": "403.30"}
    assert json.loads(export(pb.EXPORT_FORMAT_JSON).content)["number"] == note.number
    document = export(pb.EXPORT_FORMAT_PDF)
    assert document.filename == f"{note.number}.pdf"
    pdf = pypdfium2.PdfDocument(document.content)
    text = pdf[0].get_textpage().get_text_range()
    for expected in ("CREDIT NOTE", note.number, billing.march.number, "403.30",
                     "burst during an outage"):
        assert expected in text


def test_racing_credit_notes_never_over_credit(billing: Billing) -> None:
    # Eight billing admins credit 1000.00 each at once on 3470.00 net: three succeed.
    def attempt(index: int) -> str:
        try:
            return billing.issue(scope=AMOUNT, amount=sgd("1000.00"), reason=f"race {index}").id
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
            return ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        issued = [i for i in pool.map(attempt, range(8)) if i]
    assert len(issued) == 3
    notes = billing.stub.ListCreditNotes(
        credit_note_pb2.ListCreditNotesRequest(invoice_id=billing.march.id),
        metadata=billing.as_("admin"), timeout=30,
    ).credit_notes
    assert sorted(n.id for n in notes) == sorted(issued)
    assert sorted(n.number for n in notes) == [f"SG-CN-2025-04-00000{i}" for i in (1, 2, 3)]
    assert sum(Decimal(n.subtotal.amount) for n in notes) == Decimal("3000.00")
    # Cumulative rounding: 90.00 each, 270.00 of the invoice's 312.30.
    assert sum(Decimal(n.tax.amount) for n in notes) == Decimal("270.00")
    last = billing.issue(scope=WHOLE, reason="the rest")
    assert (last.subtotal.amount, last.tax.amount) == ("470.00", "42.30")


def test_idcctl_billing_credit_note_issue_list_show_export(
    billing: Billing, tmp_path: Path
) -> None:
    env = {"IDC_BILLING_ADDRESS": billing.address, "IDC_TOKEN": billing.tokens["admin"],
           "IDC_TLS": "off"}

    def idcctl(*argv: str) -> str:
        console = Console(width=200, record=True)
        code, _ = cli.run(list(argv), console=console, error_console=console, env=env)
        text = console.export_text()
        assert code == 0, text
        return text

    issued = idcctl("billing", "credit-note", "issue", billing.march.id, "--amount", "500.00",
                    "--reason", "late activation")
    assert "SG-CN-2025-04-000001" in issued and "545.00" in issued  # 500.00 + GST 45.00
    (note,) = billing.stub.ListCreditNotes(
        credit_note_pb2.ListCreditNotesRequest(), metadata=billing.as_("admin"), timeout=30
    ).credit_notes
    assert "late activation" in idcctl("billing", "credit-note", "list")
    assert "(the customer's next invoice)" in idcctl("billing", "credit-note", "show", note.id)
    assert "wrote" in idcctl("billing", "credit-note", "export", note.id, "--format", "csv",
                             "--file", str(tmp_path))
    assert (tmp_path / "SG-CN-2025-04-000001.csv").read_text().count("\nline,") == 1
