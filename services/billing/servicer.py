# ruff: noqa: N802 - method names are the gRPC contract's
"""idc.billing.v1.BillingService: proto <-> application, and who may see what.

Customers see their own tenant's usage and FINALIZED invoices only (anything else is
NOT_FOUND, so invoice ids of other tenants are not even confirmed to exist); billing admins
(and admins) see everything and alone run cycles and finalise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import json_format

from idc.billing.v1 import billing_service_pb2 as pb
from idc.billing.v1 import billing_service_pb2_grpc, invoice_pb2, usage_pb2
from idc.type.v1 import money_pb2, year_month_pb2
from services.billing import close_api, export
from services.billing.close import BillingClose
from services.billing.credit_notes import CreditNotes
from services.billing.credit_servicer import CreditNoteRpcs
from services.billing.credit_store import SqlCreditStore
from services.billing.cycle import CycleRequest
from services.billing.domain.ends import billed_side, side_of
from services.billing.domain.entities import BillingDirectory
from services.billing.domain.money import format_amount
from services.billing.domain.percentile import Sample, expected_intervals, nearest_rank_p95
from services.billing.domain.rating import BillingMonth
from services.billing.domain.reconciliation import intervals_lost
from services.billing.invoices import InvoiceState, StoredInvoice
from services.billing.job_store import SqlJobStore
from services.billing.paging import page_window
from services.billing.reconcile_proto import gap_proto, reconciliation_proto
from services.billing.store import InvoiceFilter, SqlBillingStore
from services.common.auth import Principal, Role, current_principal, require_role
from services.common.errors import InvalidArgument, NotFound, PermissionDenied

ADMINS = (Role.BILLING_ADMIN, Role.ADMIN)


_stamp = close_api.stamp


def _money(currency: str, amount: Decimal) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount=format_amount(amount))


def _month(message: year_month_pb2.YearMonth, field: str) -> BillingMonth:
    try:
        return BillingMonth(message.year, message.month)
    except InvalidArgument as error:
        raise InvalidArgument.for_field(field, error.message) from None


def _reader(tenant_id: str) -> Principal:
    principal = current_principal()
    if principal.role in ADMINS:
        return principal
    if principal.role is Role.CUSTOMER and principal.tenant == tenant_id:
        return principal
    if principal.role is Role.CUSTOMER:
        raise NotFound("no such invoice or circuit for your tenant")
    raise PermissionDenied(
        f"billing data is for customers and billing admins, not {principal.role}"
    )


class BillingServicer(CreditNoteRpcs, billing_service_pb2_grpc.BillingServiceServicer):
    def __init__(
        self,
        store: SqlBillingStore,
        close: BillingClose,
        jobs: SqlJobStore,
        directory: BillingDirectory,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._close = close
        self._jobs = jobs
        self._directory = directory
        self._clock = clock
        self._credits = CreditNotes(SqlCreditStore(store.session_factory), directory, clock)

    # -- usage ----------------------------------------------------------------------------

    def GetUsage(self, request: pb.GetUsageRequest, context: Any) -> pb.GetUsageResponse:
        if not request.circuit_id:
            raise InvalidArgument.for_field("circuit_id", "is required")
        tenant = self._store.tenant_of(request.circuit_id)
        if tenant is None:
            current_principal()
            raise NotFound(f"circuit {request.circuit_id} has no billing record")
        _reader(tenant)
        now = self._clock()
        if request.HasField("range"):
            start = request.range.start_time.ToDatetime(tzinfo=now.tzinfo)
            end = request.range.end_time.ToDatetime(tzinfo=now.tzinfo)
            if end <= start:
                raise InvalidArgument.for_field("range.end_time", "must be after start_time")
        else:
            zone = self._directory.customer(tenant).time_zone
            current = now.astimezone(zone)
            start, _ = BillingMonth(current.year, current.month).window(zone)
            end = now
        side = (
            side_of(request.side) if request.side
            else billed_side(self._directory.customer(tenant).entity)
        )
        records = self._store.usage(request.circuit_id, start, end, side)
        gaps = self._store.gaps([request.circuit_id], start, end).get(
            (request.circuit_id, side), []
        )
        result = nearest_rank_p95(
            [Sample(r.interval_start, r.bytes_in, r.bytes_out, r.interval_seconds, r.valid)
             for r in records]
        )
        summary = usage_pb2.PercentileSummary(
            samples_expected=expected_intervals(start, min(end, now)),
        )
        if result is not None:
            billed = result.billed
            summary.samples_present = result.samples_present
            summary.samples_discarded = result.samples_discarded
            summary.p95_in_mbps = result.inbound.mbps
            summary.p95_out_mbps = result.outbound.mbps
            summary.billable_mbps = result.billable_mbps
            record = next(r for r in records if r.interval_start == billed.sample.interval_start)
            summary.billed_sample.CopyFrom(_interval(record))
            exact = Decimal(billed.rate_bps.numerator) / Decimal(billed.rate_bps.denominator)
            summary.billed_sample_bps = format_amount(exact)
        volumes = [(r.bytes_in, r.bytes_out) for r in records if r.valid] + [
            (g.bytes_in, g.bytes_out) for g in gaps if g.valid
        ]
        response = pb.GetUsageResponse(
            circuit_id=request.circuit_id, summary=summary, side=int(side),  # type: ignore[arg-type]
            volume_bytes_in=sum(v[0] for v in volumes),
            volume_bytes_out=sum(v[1] for v in volumes),
            gap_volumes=[gap_proto(g) for g in gaps],
            intervals_lost_to_gaps=intervals_lost(gaps, start, end),
        )
        response.range.start_time.FromDatetime(start)
        response.range.end_time.FromDatetime(end)
        if request.include_samples:
            response.samples.extend(_interval(r) for r in records)
        return response

    # -- runs -----------------------------------------------------------------------------

    def RunBillingCycle(
        self, request: pb.RunBillingCycleRequest, context: Any
    ) -> Iterator[pb.RunBillingCycleResponse]:
        principal = require_role(*ADMINS)
        cycle_request = CycleRequest(
            month=_month(request.month, "month"),
            billing_entity_id=request.billing_entity_id,
            as_of=(
                request.as_of_time.ToDatetime(tzinfo=self._clock().tzinfo)
                if request.HasField("as_of_time") else None
            ),
            tenant_ids=list(request.tenant_ids),
            dry_run=request.dry_run,
        )
        # The work is a job of the service: a dropped stream leaves it running.
        job = self._close.start_run(cycle_request, principal.subject)
        yield from close_api.followed(self._jobs, self._close.runner, job.id, self._clock)

    def StartBillingClose(
        self, request: pb.StartBillingCloseRequest, context: Any
    ) -> pb.StartBillingCloseResponse:
        principal = require_role(*ADMINS)
        job = self._close.start_close(
            _month(request.month, "month") if request.HasField("month") else None,
            list(request.billing_entity_ids),
            request.as_of_time.ToDatetime(tzinfo=self._clock().tzinfo)
            if request.HasField("as_of_time") else None,
            principal.subject,
        )
        return pb.StartBillingCloseResponse(job=close_api.job(job))

    def GetBillingJob(
        self, request: pb.GetBillingJobRequest, context: Any
    ) -> pb.GetBillingJobResponse:
        require_role(*ADMINS)
        if not request.job_id:
            raise InvalidArgument.for_field("job_id", "is required")
        job = self._jobs.get(request.job_id)
        if job is None:
            raise NotFound(f"billing job {request.job_id} does not exist")
        return pb.GetBillingJobResponse(
            job=close_api.job(job, self._jobs.finalizations(job.id))
        )

    def FinalizeBillingClose(
        self, request: pb.FinalizeBillingCloseRequest, context: Any
    ) -> pb.FinalizeBillingCloseResponse:
        principal = require_role(*ADMINS)
        record = self._close.finalize(
            request.job_id,
            _month(request.month, "month") if request.HasField("month") else None,
            request.override_reason, principal.subject,
        )
        return pb.FinalizeBillingCloseResponse(finalization=close_api.finalization(record))

    def GetUsageCompleteness(
        self, request: pb.GetUsageCompletenessRequest, context: Any
    ) -> pb.GetUsageCompletenessResponse:
        require_role(*ADMINS)
        if not request.HasField("month"):
            raise InvalidArgument.for_field("month", "is required")
        return close_api.completeness(self._close.completeness(
            _month(request.month, "month"), request.billing_entity_id
        ))

    def GetReconciliation(
        self, request: pb.GetReconciliationRequest, context: Any
    ) -> pb.GetReconciliationResponse:
        require_role(*ADMINS)
        if not request.HasField("month"):
            raise InvalidArgument.for_field("month", "is required")
        month = _month(request.month, "month")
        if request.tenant_id and request.tenant_id not in self._store.tenants():
            raise NotFound(f"tenant {request.tenant_id} has no circuit known to billing")
        reconciler = self._close.reconciler
        report = reconciler.report(month, request.tenant_id or None)
        if request.differences_only:
            report = [r for r in report if not r.within_tolerance]
        return pb.GetReconciliationResponse(
            circuits=[reconciliation_proto(r) for r in report],
            tolerance_percent=str(reconciler.tolerance_percent),
        )

    # -- invoices -------------------------------------------------------------------------

    def ListInvoices(
        self, request: pb.ListInvoicesRequest, context: Any
    ) -> pb.ListInvoicesResponse:
        principal = current_principal()
        if principal.role not in (*ADMINS, Role.CUSTOMER):
            raise PermissionDenied(
                f"invoices are for customers and billing admins, not {principal.role}"
            )
        tenant = request.tenant_id or None
        state = InvoiceState(request.state) if request.state else None
        if principal.role is Role.CUSTOMER:
            if tenant not in (None, principal.tenant):
                return pb.ListInvoicesResponse()
            tenant = principal.tenant
            if state is InvoiceState.DRAFT:
                return pb.ListInvoicesResponse()
            state = InvoiceState.FINALIZED
        page = page_window(request.page_size, request.page_token)
        where = InvoiceFilter(
            tenant_id=tenant,
            billing_entity_id=request.billing_entity_id or None,
            month=_month(request.month, "month") if request.HasField("month") else None,
            state=state,
        )
        invoices, next_page_token = self._store.list_invoices(where, page)
        return pb.ListInvoicesResponse(
            invoices=self.with_credit_balances(to_proto(i) for i in invoices),
            next_page_token=next_page_token,
        )

    def GetInvoice(self, request: pb.GetInvoiceRequest, context: Any) -> pb.GetInvoiceResponse:
        invoice = to_proto(self._visible(request.invoice_id))
        return pb.GetInvoiceResponse(invoice=self.with_credit_balances([invoice])[0])

    def FinalizeInvoice(
        self, request: pb.FinalizeInvoiceRequest, context: Any
    ) -> pb.FinalizeInvoiceResponse:
        require_role(*ADMINS)
        invoice = self._visible(request.invoice_id)
        entity = self._directory.entity(invoice.billing_entity_id)
        finalized = self._store.finalize(
            invoice.id, self._clock(), entity.invoice_prefix, entity.payment_terms_days
        )
        return pb.FinalizeInvoiceResponse(invoice=to_proto(finalized))

    def ExportInvoice(
        self, request: pb.ExportInvoiceRequest, context: Any
    ) -> pb.ExportInvoiceResponse:
        invoice = self._visible(request.invoice_id)
        stem = export.file_stem(invoice)
        if request.format == pb.EXPORT_FORMAT_PDF:
            entity = self._directory.entity(invoice.billing_entity_id)
            content = export.to_pdf(
                invoice, entity, self._purchase_orders(invoice), self.credit_balance(invoice)
            )
            return pb.ExportInvoiceResponse(
                content=content, content_type="application/pdf", filename=f"{stem}.pdf"
            )
        if request.format == pb.EXPORT_FORMAT_CSV:
            return pb.ExportInvoiceResponse(
                content=export.to_csv(
                    invoice, self._purchase_orders(invoice), self.credit_balance(invoice)
                ),
                content_type="text/csv", filename=f"{stem}.csv",
            )
        if request.format == pb.EXPORT_FORMAT_JSON:
            text = json_format.MessageToJson(self.with_credit_balances([to_proto(invoice)])[0])
            return pb.ExportInvoiceResponse(
                content=text.encode(), content_type="application/json", filename=f"{stem}.json"
            )
        raise InvalidArgument.for_field("format", "choose EXPORT_FORMAT_PDF, _CSV or _JSON")

    def _purchase_orders(self, invoice: StoredInvoice) -> dict[str, str]:
        _, month_end = invoice.month.window(ZoneInfo(invoice.time_zone))
        circuits = [stored.line.circuit_id for stored in invoice.lines]
        return self._store.purchase_orders(circuits, month_end, invoice.as_of_time)

    def _visible(self, invoice_id: str) -> StoredInvoice:
        if not invoice_id:
            raise InvalidArgument.for_field("invoice_id", "is required")
        invoice = self._store.invoice(invoice_id)
        if invoice is None:
            current_principal()
            raise NotFound(f"invoice {invoice_id} does not exist")
        principal = _reader(invoice.tenant_id)
        if principal.role is Role.CUSTOMER and invoice.state is not InvoiceState.FINALIZED:
            raise NotFound(f"invoice {invoice_id} does not exist")
        return invoice


def _interval(record: Any) -> usage_pb2.UsageInterval:
    return usage_pb2.UsageInterval(
        interval_start_time=_stamp(record.interval_start),
        interval_seconds=record.interval_seconds, bytes_in=record.bytes_in,
        bytes_out=record.bytes_out, valid=record.valid, router_name=record.router_name,
    )


def to_proto(invoice: StoredInvoice) -> invoice_pb2.Invoice:
    currency = invoice.currency
    message = invoice_pb2.Invoice(
        id=invoice.id, number=invoice.number, tenant_id=invoice.tenant_id,
        billing_entity_id=invoice.billing_entity_id,
        month=year_month_pb2.YearMonth(year=invoice.month.year, month=invoice.month.month),
        time_zone=invoice.time_zone, state=invoice_pb2.InvoiceState.ValueType(invoice.state),
        currency_code=currency,
        subtotal=_money(currency, invoice.subtotal), tax_rate=format_amount(invoice.tax_rate),
        tax=_money(currency, invoice.tax), total=_money(currency, invoice.total),
        as_of_time=_stamp(invoice.as_of_time), billing_run_id=invoice.billing_run_id,
        create_time=_stamp(invoice.created_at), update_time=_stamp(invoice.updated_at),
        finalize_time=_stamp(invoice.finalized_at),
        due_date="" if invoice.due_date is None else invoice.due_date.isoformat(),
    )
    for stored in invoice.lines:
        line = stored.line
        proto_line = message.lines.add(
            id=stored.id, kind=int(line.kind), circuit_id=line.circuit_id,
            description=line.description, segment_start_time=_stamp(line.segment_start),
            segment_end_time=_stamp(line.segment_end), days_covered=line.days_covered,
            days_in_month=line.days_in_month, factor=format_amount(line.factor),
            unit_price=_money(currency, line.unit_price), bandwidth_mbps=line.bandwidth_mbps,
            amount=_money(currency, line.amount), adjusts_invoice_id=line.adjusts_invoice_id,
            adjusts_line_id=stored.adjusts_line_id, reconciliation=line.reconciliation,
        )
        if line.burst is not None:
            b = line.burst
            proto_line.burst.CopyFrom(invoice_pb2.BurstDetail(
                samples_expected=b.samples_expected, samples_present=b.samples_present,
                samples_discarded=b.samples_discarded, billed_sample_mbps=b.billed_sample_mbps,
                billed_sample_time=_stamp(b.billed_sample_time),
                billed_direction=b.billed_direction, cir_mbps=b.cir_mbps,
                overage_mbps=b.overage_mbps, intervals_lost_to_gaps=b.intervals_lost,
                samples_in_boost=b.samples_in_boost,
            ))
        if line.boost is not None:
            x = line.boost
            proto_line.boost.CopyFrom(invoice_pb2.BoostDetail(
                boost_id=x.boost_id, base_bandwidth_mbps=x.base_mbps,
                boosted_bandwidth_mbps=x.boosted_mbps,
                booked_start_time=_stamp(x.booked_start), booked_end_time=_stamp(x.booked_end),
                billed_start_time=_stamp(x.billed_start), billed_end_time=_stamp(x.billed_end),
                started_hours=x.started_hours,
            ))
    return message
