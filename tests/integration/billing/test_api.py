"""BillingService over gRPC (auth, streaming, exports) on the real database."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pypdfium2  # type: ignore[import-untyped]
import pytest
from sqlalchemy.orm import Session, sessionmaker

from idc.billing.v1 import billing_service_pb2 as pb
from idc.billing.v1 import billing_service_pb2_grpc, invoice_pb2
from idc.type.v1 import side_pb2, time_range_pb2, year_month_pb2
from services.billing.domain.ends import Side
from services.billing.domain.rating import BillingMonth
from services.billing.invoices import invoice_id_for
from services.common.auth import Principal, Role
from services.common.config import ServiceSettings
from services.common.grpc_server import GrpcApp, call_metadata
from services.common.servicers import register
from services.common.tokens import HarnessKeys
from tests.integration.billing.support import (
    Clock,
    activated,
    billing_servicer,
    ingest_directly,
    migrated,
    price,
    sample,
)

pytestmark = pytest.mark.integration

MARCH = year_month_pb2.YearMonth(year=2025, month=3)
BYTES_PER_MBPS = 37_500_000


class Api:
    factory: sessionmaker[Session]
    clock: Clock

    def __init__(self, stub: billing_service_pb2_grpc.BillingServiceStub, tokens: dict[str, str]):
        self.stub = stub
        self.tokens = tokens

    def as_(self, who: str) -> tuple[tuple[str, str | bytes], ...]:
        return tuple(call_metadata(self.tokens[who]))


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    factory = migrated(database_url)
    clock = Clock(datetime(2025, 3, 1, tzinfo=UTC))
    ingest_directly(
        factory, clock,
        [
            activated("c-sg", "acme-sg", datetime(2025, 2, 1, tzinfo=UTC), 100,
                      price("SGD", "3100.00", "0", "10.00")),
            activated("c-cq", "yangtze-cq", datetime(2025, 2, 1, tzinfo=UTC), 100,
                      price("CNY", "6200.00", "0", "40.00", purchase_order="CQ-PO 2025/17")),
        ]
        + [sample("c-sg", "acme-sg", datetime(2025, 3, 5, tzinfo=UTC) + timedelta(minutes=5 * i),
                  BYTES_PER_MBPS * (100 + i), BYTES_PER_MBPS * 20) for i in range(40)],
    )
    clock.now = datetime(2025, 4, 2, tzinfo=UTC)
    servicer, runner = billing_servicer(factory, clock)
    keys = HarnessKeys.generate()
    tokens = {
        "admin": keys.mint(Principal("billing@idc", Role.BILLING_ADMIN)),
        "acme": keys.mint(Principal("ops@acme", Role.CUSTOMER, tenant="acme-sg")),
        "yangtze": keys.mint(Principal("it@yangtze", Role.CUSTOMER, tenant="yangtze-cq")),
        "ops": keys.mint(Principal("noc@sg", Role.OPS, telco="sg")),
    }
    app = GrpcApp(
        settings=ServiceSettings(name="billing", listen="127.0.0.1:0", database_url=database_url,
                                 grace_period_s=1.0),
        register=lambda server: [register(
            server, pb.DESCRIPTOR, "BillingService",
            billing_service_pb2_grpc.add_BillingServiceServicer_to_server, servicer,
        )],
        tokens=keys.verifier(),
        workers=[runner],
    )
    port = app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            api = Api(billing_service_pb2_grpc.BillingServiceStub(channel), tokens)
            api.factory, api.clock = factory, clock
            yield api
    finally:
        app.stop()


def run_march(api: Api) -> list[pb.RunBillingCycleResponse]:
    return list(api.stub.RunBillingCycle(
        pb.RunBillingCycleRequest(month=MARCH), metadata=api.as_("admin"), timeout=60
    ))


def code_of(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.RpcError)
    return call.code()


def test_billing_cycle_streams_and_only_admins_run_or_finalise(api: Api) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        list(api.stub.RunBillingCycle(
            pb.RunBillingCycleRequest(month=MARCH), metadata=api.as_("acme"), timeout=10
        ))
    assert code_of(refused.value) == grpc.StatusCode.PERMISSION_DENIED
    messages = run_march(api)
    assert [m.WhichOneof("event") for m in messages][-1] == "summary"
    assert {m.progress.stage for m in messages[:-1]} >= {
        pb.BILLING_STAGE_SEGMENTING, pb.BILLING_STAGE_RATING, pb.BILLING_STAGE_DONE
    }
    summary = messages[-1].summary
    assert summary.invoices_created == 2
    assert {(m.currency_code, m.amount) for m in summary.totals} == {
        # acme-sg: MRC 3100.00; 40 samples, 2 discarded, p95 = 137 Mbps -> 37 * 10.00 = 370.00;
        # subtotal 3470.00 + GST 312.30 = 3782.30. yangtze-cq: 6200.00 + VAT 372.00.
        ("SGD", "3782.30"), ("CNY", "6572.00"),
    }
    acme_id = next(
        i for i in summary.invoice_ids
        if api.stub.GetInvoice(pb.GetInvoiceRequest(invoice_id=i), metadata=api.as_("admin"))
        .invoice.tenant_id == "acme-sg"
    )
    # Customers do not see drafts, nor other tenants' invoices; ops see no billing at all.
    for who, expected in (("acme", grpc.StatusCode.NOT_FOUND),
                          ("ops", grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as hidden:
            api.stub.GetInvoice(pb.GetInvoiceRequest(invoice_id=acme_id), metadata=api.as_(who))
        assert code_of(hidden.value) == expected
    with pytest.raises(grpc.RpcError) as not_admin:
        api.stub.FinalizeInvoice(
            pb.FinalizeInvoiceRequest(invoice_id=acme_id), metadata=api.as_("acme")
        )
    assert code_of(not_admin.value) == grpc.StatusCode.PERMISSION_DENIED

    final = api.stub.FinalizeInvoice(
        pb.FinalizeInvoiceRequest(invoice_id=acme_id), metadata=api.as_("admin")
    ).invoice
    assert (final.state, final.number) == (invoice_pb2.INVOICE_STATE_FINALIZED,
                                           "SG-2025-03-000001")
    mine = api.stub.GetInvoice(pb.GetInvoiceRequest(invoice_id=acme_id), metadata=api.as_("acme"))
    assert mine.invoice.total.amount == "3782.30"
    burst = next(x for x in mine.invoice.lines if x.kind == invoice_pb2.INVOICE_LINE_KIND_BURST)
    assert (burst.burst.samples_present, burst.burst.samples_discarded,
            burst.burst.billed_sample_mbps) == (40, 2, 137)
    with pytest.raises(grpc.RpcError) as other:
        api.stub.GetInvoice(pb.GetInvoiceRequest(invoice_id=acme_id), metadata=api.as_("yangtze"))
    assert code_of(other.value) == grpc.StatusCode.NOT_FOUND
    listed = api.stub.ListInvoices(pb.ListInvoicesRequest(), metadata=api.as_("acme"))
    assert [i.id for i in listed.invoices] == [acme_id]
    everything = api.stub.ListInvoices(pb.ListInvoicesRequest(), metadata=api.as_("admin"))
    assert len(everything.invoices) == 2

    # Running March again: the finalised invoice is left alone, the same ids come back.
    again = run_march(api)[-1].summary
    assert (again.invoices_skipped_finalized, sorted(again.invoice_ids)) == (
        1, sorted(summary.invoice_ids)
    )


def test_usage_with_its_95th_percentile(api: Api) -> None:
    request = pb.GetUsageRequest(circuit_id="c-sg", include_samples=True)
    request.range.start_time.FromDatetime(datetime(2025, 3, 1, tzinfo=UTC))
    request.range.end_time.FromDatetime(datetime(2025, 4, 1, tzinfo=UTC))
    usage = api.stub.GetUsage(request, metadata=api.as_("acme"))
    assert len(usage.samples) == 40
    assert (usage.summary.samples_present, usage.summary.samples_discarded,
            usage.summary.p95_in_mbps, usage.summary.billable_mbps) == (40, 2, 137, 137)
    assert usage.summary.billed_sample_bps == "137000000"
    with pytest.raises(grpc.RpcError) as hidden:
        api.stub.GetUsage(request, metadata=api.as_("yangtze"))
    assert code_of(hidden.value) == grpc.StatusCode.NOT_FOUND


def test_exports_csv_adds_up_and_pdf_renders(api: Api) -> None:
    summary = run_march(api)[-1].summary
    for invoice_id in summary.invoice_ids:
        csv_export = api.stub.ExportInvoice(
            pb.ExportInvoiceRequest(invoice_id=invoice_id, format=pb.EXPORT_FORMAT_CSV),
            metadata=api.as_("admin"),
        )
        assert csv_export.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(csv_export.content.decode())))
        (totals,) = [r for r in rows if r["row"] == "totals"]
        # The whole line column, as a spreadsheet sums it: the subtotal, not the bill twice.
        lines = [Decimal(r["line_amount"]) for r in rows if r["line_amount"]]
        assert lines and sum(lines) == Decimal(totals["subtotal"])
        assert Decimal(totals["subtotal"]) + Decimal(totals["tax"]) == Decimal(totals["total"])

    pdf = api.stub.ExportInvoice(
        pb.ExportInvoiceRequest(invoice_id=summary.invoice_ids[0], format=pb.EXPORT_FORMAT_PDF),
        metadata=api.as_("admin"),
    )
    assert (pdf.content_type, pdf.content[:5]) == ("application/pdf", b"%PDF-")
    document = pypdfium2.PdfDocument(pdf.content)
    try:
        page = document[0]
        image = page.render(scale=1).to_pil().convert("L")
        text = page.get_textpage().get_text_range()
    finally:
        document.close()
    dark = sum(image.histogram()[:128])  # pixels darker than mid-grey
    assert dark > 2000, "the first page looks blank"
    assert "INVOICE" in text and "Total" in text and "samples expected" in text


def test_a_chinese_customers_pdf_prints_its_name_and_purchase_order(api: Api) -> None:
    run_march(api)
    (invoice,) = api.stub.ListInvoices(
        pb.ListInvoicesRequest(tenant_id="yangtze-cq"), metadata=api.as_("admin")
    ).invoices
    finalized = api.stub.FinalizeInvoice(
        pb.FinalizeInvoiceRequest(invoice_id=invoice.id), metadata=api.as_("admin")
    ).invoice
    pdf = api.stub.ExportInvoice(
        pb.ExportInvoiceRequest(invoice_id=invoice.id, format=pb.EXPORT_FORMAT_PDF),
        metadata=api.as_("yangtze"),
    )
    document = pypdfium2.PdfDocument(pdf.content)
    try:
        text = document[0].get_textpage().get_text_range()
    finally:
        document.close()
    assert "重庆长江制造有限公司" in text and "CQ-PO 2025/17" in text
    assert finalized.number.startswith("CQ-2025-03-") and finalized.number in text
    assert finalized.due_date == "2025-05-17"
    # Issued 2 April in Chongqing, due 45 days later (cq-telco's terms).
    assert "Due date: 2025-05-17" in text and "Net 45 days" in text
    assert "2025-03-01 to 2025-03-31" in text and "6,200.00" in text


def test_gap_volumes_count_in_usage_and_the_other_end_is_reconciled(api: Api) -> None:
    start = datetime(2025, 3, 5, tzinfo=UTC)
    gap = sample("c-sg", "acme-sg", start + timedelta(minutes=5 * 40), BYTES_PER_MBPS * 900, 0)
    gap.gap_volume, gap.intervals_missed, gap.interval_seconds = True, 3, 900
    # The Chongqing end saw the same 40 intervals, with a fifth of the inbound traffic lost.
    far = [sample("c-sg", "acme-sg", start + timedelta(minutes=5 * i),
                  BYTES_PER_MBPS * 20, BYTES_PER_MBPS * (100 + i) * 4 // 5, side=Side.CHONGQING)
           for i in range(40)]
    ingest_directly(api.factory, api.clock, [gap, *far])

    march = time_range_pb2.TimeRange()
    march.start_time.FromDatetime(datetime(2025, 3, 1, tzinfo=UTC))
    march.end_time.FromDatetime(datetime(2025, 4, 1, tzinfo=UTC))
    usage = api.stub.GetUsage(pb.GetUsageRequest(circuit_id="c-sg", range=march),
                              metadata=api.as_("acme"))
    assert usage.side == side_pb2.SIDE_SINGAPORE  # acme-sg is billed by sg-telco
    assert usage.summary.samples_present == 40  # the gap volume is not a sample
    assert usage.summary.p95_in_mbps == 137  # nor part of the percentile
    assert usage.intervals_lost_to_gaps == 3
    assert [(g.intervals_missed, g.bytes_in) for g in usage.gap_volumes] == [
        (3, BYTES_PER_MBPS * 900)
    ]
    sent_in = sum(BYTES_PER_MBPS * (100 + i) for i in range(40)) + BYTES_PER_MBPS * 900
    assert usage.volume_bytes_in == sent_in
    other = api.stub.GetUsage(
        pb.GetUsageRequest(circuit_id="c-sg", range=march, side=side_pb2.SIDE_CHONGQING),
        metadata=api.as_("acme"),
    )
    assert other.side == side_pb2.SIDE_CHONGQING and other.summary.samples_present == 40

    with pytest.raises(grpc.RpcError) as refused:
        api.stub.GetReconciliation(pb.GetReconciliationRequest(month=MARCH),
                                   metadata=api.as_("acme"))
    assert code_of(refused.value) == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as unknown:
        api.stub.GetReconciliation(pb.GetReconciliationRequest(month=MARCH, tenant_id="nobody"),
                                   metadata=api.as_("admin"))
    assert code_of(unknown.value) == grpc.StatusCode.NOT_FOUND
    report = api.stub.GetReconciliation(pb.GetReconciliationRequest(month=MARCH),
                                        metadata=api.as_("admin"))
    assert report.tolerance_percent == "1"
    by_circuit = {r.circuit_id: r for r in report.circuits}
    assert set(by_circuit) == {"c-sg", "c-cq"}
    ends = by_circuit["c-sg"]
    assert not ends.within_tolerance
    assert ends.billed_end.side == side_pb2.SIDE_SINGAPORE
    assert ends.billed_end.intervals_lost_to_gaps == 3
    assert ends.other_end.p95_known and ends.billed_end.p95_known
    assert ends.volume_difference_bytes == (
        ends.other_end.bytes_in + ends.other_end.bytes_out
        - ends.billed_end.bytes_in - ends.billed_end.bytes_out
    ) < 0
    # yangtze-cq's circuit has no usage at either end: nothing differs.
    assert by_circuit["c-cq"].within_tolerance
    only = api.stub.GetReconciliation(
        pb.GetReconciliationRequest(month=MARCH, differences_only=True), metadata=api.as_("admin")
    )
    assert [r.circuit_id for r in only.circuits] == ["c-sg"]

    summary = run_march(api)[-1].summary
    assert [r.circuit_id for r in summary.reconciliation_differences] == ["c-sg"]
    assert any("c-sg" in w and "OUTSIDE" in w for w in summary.warnings)
    invoice_id = invoice_id_for("acme-sg", BillingMonth(2025, 3))
    assert invoice_id in summary.invoice_ids
    invoice = api.stub.GetInvoice(pb.GetInvoiceRequest(invoice_id=invoice_id),
                                  metadata=api.as_("admin")).invoice
    burst = next(line for line in invoice.lines if line.kind == invoice_pb2.INVOICE_LINE_KIND_BURST)
    assert burst.burst.intervals_lost_to_gaps == 3
    assert burst.burst.samples_present == 40
    assert "OUTSIDE" in burst.reconciliation
    # Evidence only: the amounts are the billed end's, as without the other end.
    assert {(m.currency_code, m.amount) for m in summary.totals} >= {("SGD", "3782.30")}
