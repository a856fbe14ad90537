"""The month-end close over gRPC on the real database (and the real broker for the lag):
runs are jobs that outlive their caller, finalisation is guarded by the close's warnings."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import grpc
import pytest
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from idc.billing.v1 import billing_service_pb2 as pb
from idc.billing.v1 import billing_service_pb2_grpc, invoice_pb2
from idc.type.v1 import year_month_pb2
from services.billing.app import billing_close
from services.billing.close import UsageLag
from services.billing.domain.jobs import JobKind
from services.billing.invoices import InvoiceDraft, SaveOutcome
from services.billing.job_store import SqlJobStore
from services.billing.jobs import JobRunner, JobSettings, process_owner
from services.billing.servicer import BillingServicer
from services.billing.store import SqlBillingStore
from services.billing.usage_lag import BrokerUsageLag
from services.cli import main as cli
from services.common.auth import Principal, Role
from services.common.config import KafkaSettings, ServiceSettings
from services.common.grpc_server import GrpcApp, call_metadata
from services.common.servicers import register
from services.common.tokens import HarnessKeys
from tests.integration.billing.support import (
    Clock,
    activated,
    caught_up,
    directory,
    ingest_directly,
    migrated,
    price,
    publish,
    sample,
)

pytestmark = pytest.mark.integration

MARCH = year_month_pb2.YearMonth(year=2025, month=3)
BYTES_PER_MBPS = 37_500_000
SAMPLES_FROM = datetime(2025, 3, 5, tzinfo=UTC)
BOUND_S = 60.0


class GatedStore(SqlBillingStore):
    """Holds a run at its first invoice write until released (a run caught halfway)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        super().__init__(factory)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def save(self, draft: InvoiceDraft, run_id: str, as_of: datetime, now: datetime
             ) -> SaveOutcome:
        self.entered.set()
        assert self.release.wait(BOUND_S), "the test never released the run"
        return super().save(draft, run_id, as_of, now)


@dataclass
class Stack:
    stub: billing_service_pb2_grpc.BillingServiceStub
    admin: tuple[tuple[str, str | bytes], ...]
    store: GatedStore
    jobs: SqlJobStore
    runner: JobRunner
    clock: Clock
    address: str
    token: str

    def job(self, job_id: str) -> pb.BillingJob:
        return self.stub.GetBillingJob(pb.GetBillingJobRequest(job_id=job_id),
                                       metadata=self.admin).job

    def finished(self, job_id: str) -> pb.BillingJob:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job.state in (pb.BILLING_JOB_STATE_SUCCEEDED, pb.BILLING_JOB_STATE_FAILED,
                             pb.BILLING_JOB_STATE_INTERRUPTED):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {self.job(job_id).state} after {BOUND_S} s")

    def run_march(self, **fields: Any) -> list[pb.RunBillingCycleResponse]:
        return list(self.stub.RunBillingCycle(
            pb.RunBillingCycleRequest(month=MARCH, **fields), metadata=self.admin, timeout=60
        ))


def load(factory: sessionmaker[Session], clock: Clock) -> None:
    """acme-sg with 40 samples in March, yangtze-cq with none."""
    ingest_directly(factory, clock, [
        activated("c-sg", "acme-sg", datetime(2025, 2, 1, tzinfo=UTC), 100,
                  price("SGD", "3100.00", "0", "10.00")),
        activated("c-cq", "yangtze-cq", datetime(2025, 2, 1, tzinfo=UTC), 100,
                  price("CNY", "6200.00", "0", "40.00")),
    ] + [sample("c-sg", "acme-sg", SAMPLES_FROM + timedelta(minutes=5 * i),
                BYTES_PER_MBPS * (100 + i), BYTES_PER_MBPS * 20) for i in range(40)])


def serve(factory: sessionmaker[Session], database_url: str, usage_lag: UsageLag
          ) -> Generator[Stack, None, None]:
    clock = Clock(datetime(2025, 3, 1, tzinfo=UTC))
    load(factory, clock)
    clock.now = datetime(2025, 4, 2, tzinfo=UTC)
    store, jobs, entities = GatedStore(factory), SqlJobStore(factory), directory()
    runner, close = billing_close(store, jobs, entities, JobSettings(), usage_lag, clock)
    servicer = BillingServicer(store, close, jobs, entities, clock)
    keys = HarnessKeys.generate()
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
    token = keys.mint(Principal("billing@idc", Role.BILLING_ADMIN))
    admin = tuple(call_metadata(token))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stack(billing_service_pb2_grpc.BillingServiceStub(channel), admin, store, jobs,
                        runner, clock, f"127.0.0.1:{port}", token)
    finally:
        store.release.set()
        app.stop()


@pytest.fixture
def stack(database_url: str) -> Iterator[Stack]:
    yield from serve(migrated(database_url), database_url, caught_up)


def failed(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def test_a_run_goes_on_when_its_client_disconnects(stack: Stack) -> None:
    stack.store.release.clear()
    call: Any = stack.stub.RunBillingCycle(pb.RunBillingCycleRequest(month=MARCH),
                                           metadata=stack.admin, timeout=60)
    first = next(call)
    job_id = first.progress.job_id
    assert job_id and stack.store.entered.wait(BOUND_S)
    assert stack.job(job_id).state == pb.BILLING_JOB_STATE_RUNNING
    call.cancel()  # the client goes away with the run halfway
    stack.store.release.set()
    job = stack.finished(job_id)
    assert job.state == pb.BILLING_JOB_STATE_SUCCEEDED, job.error
    assert job.kind == pb.BILLING_JOB_KIND_RUN and job.created_by == "billing@idc"
    (summary,) = job.summaries
    assert summary.invoices_created == 2 and len(summary.invoice_ids) == 2
    # A rerun gives the same invoices.
    again = stack.run_march()[-1].summary
    assert (sorted(again.invoice_ids), again.invoices_unchanged) == (
        sorted(summary.invoice_ids), 2
    )


def test_unknown_tenants_are_not_found_by_name(stack: Stack) -> None:
    error = failed(lambda: stack.run_march(tenant_ids=["acme-sg", "nobody", "ghost"]))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost, nobody" in (error.details() or "")
    other = failed(lambda: stack.run_march(tenant_ids=["yangtze-cq"],
                                           billing_entity_id="sg-telco"))
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "yangtze-cq (billed by cq-telco)" in (other.details() or "")


def test_finalising_a_close_is_refused_with_warnings_and_allowed_with_a_recorded_reason(
    stack: Stack,
) -> None:
    # No month: the previous month in each entity's zone (2 April: March for both).
    started = stack.stub.StartBillingClose(pb.StartBillingCloseRequest(), metadata=stack.admin)
    assert [(t.billing_entity_id, t.month.month) for t in started.job.targets] == [
        ("cq-telco", 3), ("sg-telco", 3),
    ]
    job = stack.finished(started.job.id)
    assert job.state == pb.BILLING_JOB_STATE_SUCCEEDED, job.error
    kinds = {(pb.CloseWarningKind.Name(w.kind), w.subject) for w in job.warnings}
    # c-cq has no sample; usage stored ends on 5 March, before the month does.
    assert ("CLOSE_WARNING_KIND_NO_SAMPLES", "c-cq") in kinds
    assert ("CLOSE_WARNING_KIND_INGEST_BEHIND", "sg-edge-1") in kinds

    refused = failed(lambda: stack.stub.FinalizeBillingClose(
        pb.FinalizeBillingCloseRequest(job_id=job.id), metadata=stack.admin))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "NO_SAMPLES (c-cq)" in (refused.details() or "")
    assert "INGEST_BEHIND" in (refused.details() or "")
    short = failed(lambda: stack.stub.FinalizeBillingClose(
        pb.FinalizeBillingCloseRequest(job_id=job.id, override_reason="ok"),
        metadata=stack.admin))
    assert short.code() == grpc.StatusCode.INVALID_ARGUMENT
    invoices = [i for s in job.summaries for i in s.invoice_ids]
    assert all(_state(stack, i) == invoice_pb2.INVOICE_STATE_DRAFT for i in invoices)

    reason = "c-cq was not in service in March; meter backfill agreed with the NOC"
    # A run after the close recomputed the drafts: the close's warnings are not about them.
    stack.run_march()
    stale = failed(lambda: stack.stub.FinalizeBillingClose(
        pb.FinalizeBillingCloseRequest(job_id=job.id, override_reason=reason),
        metadata=stack.admin))
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "close the month again" in (stale.details() or "")
    stack.clock.advance(minutes=1)  # the newest close of the month is the one finalised
    job = stack.finished(stack.stub.StartBillingClose(
        pb.StartBillingCloseRequest(month=MARCH), metadata=stack.admin).job.id)
    done = stack.stub.FinalizeBillingClose(
        pb.FinalizeBillingCloseRequest(month=MARCH, override_reason=reason),
        metadata=stack.admin,
    ).finalization
    assert (done.job_id, done.override_reason, done.overridden_by, done.finalized_by) == (
        job.id, reason, "billing@idc", "billing@idc"
    )
    assert len(done.warnings) == len(job.warnings) and sorted(done.invoice_ids) == sorted(invoices)
    assert all(_state(stack, i) == invoice_pb2.INVOICE_STATE_FINALIZED for i in invoices)
    recorded = stack.job(job.id).finalizations
    assert [(f.id, f.override_reason, f.overridden_by) for f in recorded] == [
        (done.id, reason, "billing@idc")
    ]


def _state(stack: Stack, invoice_id: str) -> int:
    return stack.stub.GetInvoice(pb.GetInvoiceRequest(invoice_id=invoice_id),
                                 metadata=stack.admin).invoice.state


def test_a_job_of_a_process_that_died_is_interrupted_and_a_rerun_is_safe(stack: Stack) -> None:
    first = stack.run_march()[-1].summary
    request = {"targets": [{"entity": "", "month": "2025-03"}],
               "as_of": stack.clock.now.isoformat(), "tenant_ids": [], "dry_run": False,
               "close": False}
    # A job this host's previous billing process had claimed when it died.
    dead = stack.jobs.create("job-" + str(uuid.uuid4()), JobKind.RUN, request, "billing@idc",
                             stack.clock.now)
    stack.jobs.claim_next(process_owner(), stack.clock.now)
    assert stack.job(dead.id).state == pb.BILLING_JOB_STATE_RUNNING
    assert stack.runner.recover(starting=True) == [dead.id]  # what the next start does
    interrupted = stack.job(dead.id)
    assert interrupted.state == pb.BILLING_JOB_STATE_INTERRUPTED
    assert "rerun of the same month recomputes the same ones" in interrupted.error
    again = stack.run_march()[-1].summary
    assert sorted(again.invoice_ids) == sorted(first.invoice_ids)


def test_usage_completeness_reports_the_usage_consumers_lag_from_the_broker(
    database_url: str, kafka_settings: KafkaSettings, topic: str,
) -> None:
    lag = BrokerUsageLag(kafka_settings, group_id=f"billing-close-{uuid.uuid4()}", topic=topic)
    publish(kafka_settings, topic, [
        (sample("c-sg", "acme-sg", datetime(2025, 3, 31, 15, 50, tzinfo=UTC) + timedelta(
            minutes=5 * i), 1, 1), None) for i in range(3)
    ])
    stacks = serve(migrated(database_url), database_url, lag)
    stack = next(stacks)
    try:
        reply = stack.stub.GetUsageCompleteness(
            pb.GetUsageCompletenessRequest(month=MARCH, billing_entity_id="sg-telco"),
            metadata=stack.admin,
        )
        assert (reply.lag_known, reply.lag_records, reply.complete) == (True, 3, False)
        assert sum(p.records for p in reply.partitions) == 3
        # sg-telco bills acme-us in Los Angeles: its March ends at 07:00 UTC on 1 April.
        assert reply.month_end_time.ToDatetime(UTC) == datetime(2025, 4, 1, 7, tzinfo=UTC)
        (frontier,) = reply.frontiers
        assert (frontier.router_name, frontier.caught_up) == ("sg-edge-1", False)
        assert frontier.newest_interval_end_time.ToDatetime(UTC) == (
            SAMPLES_FROM + timedelta(minutes=5 * 40)
        )
        assert {w.subject for w in reply.warnings} == {"usage consumer", "sg-edge-1"}
        missing = failed(lambda: stack.stub.GetUsageCompleteness(
            pb.GetUsageCompletenessRequest(), metadata=stack.admin))
        assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stacks.close()
        lag.close()


def idcctl(stack: Stack, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"IDC_TOKEN": stack.token, "IDC_BILLING_ADDRESS": stack.address, "COLUMNS": "200"}
    with mock.patch.dict(os.environ, env):
        code, _ = cli.run(list(argv), console=Console(file=out, width=200),
                          error_console=Console(file=err, width=200))
    return code, out.getvalue(), err.getvalue()


def test_idcctl_closes_shows_the_warnings_and_finalises_only_with_a_reason(stack: Stack) -> None:
    code, out, err = idcctl(stack, "billing", "close", "--month", "2025-03")
    assert code == 0, err
    assert "SUCCEEDED" in out and "NO_SAMPLES" in out and "c-cq" in out
    assert "idcctl billing finalize --job" in out
    code, _, err = idcctl(stack, "billing", "finalize", "--month", "2025-03")
    assert code == 6 and "NO_SAMPLES (c-cq)" in err
    code, _, err = idcctl(stack, "billing", "finalize", "inv-x", "--month", "2025-03")
    assert code == 2 and "not both" in err
    reason = "agreed with finance: c-cq was idle all of March"
    code, out, err = idcctl(stack, "billing", "finalize", "--month", "2025-03",
                            "--override-reason", reason, "-o", "json")
    assert code == 0, err
    record = json.loads(out)
    assert (record["overrideReason"], record["overriddenBy"]) == (reason, "billing@idc")
    assert len(record["invoiceIds"]) == 2
    code, out, err = idcctl(stack, "billing", "completeness", "--month", "2025-03")
    assert code == 0, err
    assert "sg-edge-1" in out and "complete" in out
