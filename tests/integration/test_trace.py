"""`make demo` end to end, with every process exporting its spans to an OTLP collector
held in memory by this test: the story's steps, one trace across the hops, and no
personal data in spans, logs or on Kafka's way (the service logs)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from devstack.services import REPO_ROOT

pytestmark = pytest.mark.integration

CONTACT_NAME, CONTACT_EMAIL, CONTACT_PHONE = "Ann Lee", "ann.lee@acme-sg.example", "+6561234567"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.raw: list[bytes] = []

    def Export(  # noqa: N802 - the OTLP service's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.raw.append(request.SerializeToString())
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        Span(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(value: Any) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


@dataclass
class DemoRun:
    returncode: int
    output: str
    directory: Path
    spans: list[Span]
    raw_spans: bytes


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    directory = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "COLUMNS": "120",
    }
    env.pop("OTEL_SERVICE_NAME", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "devstack.demo", "--dir", str(directory)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
        )
        # Every process flushes its spans when it stops, before the demo exits.
        yield DemoRun(done.returncode, done.stdout + done.stderr, directory,
                      list(collector.spans), b"".join(collector.raw))
    finally:
        server.stop(0)


def test_the_demo_tells_the_whole_story(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.output[-4000:]
    for step in range(1, 9):
        assert f"\n{step}. " in demo.output, f"step {step} missing"
    assert "sg-edge-1 and cq-edge-1 both carry the circuit" in demo.output
    assert "both routers now police at 1 Gbps" in demo.output
    assert "nothing of the circuit is left on sg-edge-1 or cq-edge-1" in demo.output
    pdfs = list(demo.directory.glob("*.pdf"))
    assert len(pdfs) == 1 and pdfs[0].read_bytes().startswith(b"%PDF")


def _by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return traces


def _create_order_trace(demo: DemoRun) -> list[Span]:
    client = [s for s in demo.spans
              if s.service == "idc-idcctl" and s.name == "idc.order.v1.OrderService/CreateOrder"]
    assert len(client) == 1, "the CreateOrder call of idcctl was not exported"
    assert client[0].attributes["rpc.system"] == "grpc"
    return _by_trace(demo.spans)[client[0].trace_id]


def _processed(trace: list[Span], service: str, event_type: str) -> list[Span]:
    return [s for s in trace
            if s.service == service and s.attributes.get("idc.event_type") == event_type]


def test_one_trace_from_create_order_to_the_agents(demo: DemoRun) -> None:
    trace = _create_order_trace(demo)
    spans = {s.span_id: s for s in trace}
    server = [s for s in trace if s.service == "idc-order"
              and s.name.endswith("OrderService/CreateOrder")]
    assert server, "the order service's CreateOrder span is not in the idcctl call's trace"
    assert spans[server[0].parent_id].service == "idc-idcctl"
    # Outbox -> Kafka -> provisioning: the plan and the approved order are handled in the
    # trace, and so are the prepare commands each telco's agent receives.
    assert _processed(trace, "idc-provisioning", "idc.events.v1.OrderCreated")
    assert _processed(trace, "idc-provisioning", "idc.events.v1.OrderApproved")
    commands = [s for s in _processed(trace, "idc-provisioning",
                                      "idc.events.v1.ProvisioningCommand")]
    topics = {s.attributes["messaging.destination.name"] for s in commands}
    assert {"idc.provisioning.commands.sg", "idc.provisioning.commands.cq"} <= topics
    for span in commands:
        assert span.parent_id in spans, "a consumer span whose parent is not in the trace"


def _ancestors(span: Span, spans: dict[str, Span]) -> list[Span]:
    """The span's parent, its parent's parent, ... as far as the trace holds them."""
    found = []
    while span.parent_id in spans:
        span = spans[span.parent_id]
        found.append(span)
    return found


def test_the_trace_reaches_circuit_activated_in_the_order_service(demo: DemoRun) -> None:
    """Parent by parent (not only by trace id): the NETCONF commits on both routers descend
    from the command each agent consumed, the OrderApproved the coordinator handled and
    the Approve call; the activation handled by order and billing descends from the
    replies and the confirm round; all of it under the root of idcctl's CreateOrder."""
    trace = _create_order_trace(demo)
    spans = {s.span_id: s for s in trace}
    create_order = next(
        s for s in trace if s.service == "idc-idcctl" and s.name.endswith("/CreateOrder")
    )
    root = ([create_order, *_ancestors(create_order, spans)])[-1]
    routers = {"sg-edge-1", "cq-edge-1"}
    for operation in ("lock", "edit-config", "confirmed-commit", "confirming-commit"):
        found = [s for s in trace if s.name == f"netconf {operation}"]
        assert {s.attributes.get("idc.router.name") for s in found} == routers, operation
    commits = [s for s in trace if s.name == "netconf confirmed-commit"]
    for commit in commits:
        assert commit.attributes["rpc.system"] == "netconf"
        assert commit.attributes["rpc.method"] == "commit"
        assert commit.attributes["idc.netconf.persist_id"].startswith("idc-")
        chain = _ancestors(commit, spans)
        assert chain[0].name == f"agent prepare {commit.attributes['idc.router.name']}"
        assert chain[1].attributes.get("idc.event_type") == "idc.events.v1.ProvisioningCommand"
        assert _processed(chain, "idc-provisioning", "idc.events.v1.OrderApproved")
        assert any(s.service == "idc-order" and "ApprovalService/Approve" in s.name for s in chain)
        assert chain[-1] == root, "a commit span not linked up to the story's root"
    confirms = [s for s in trace if s.name == "netconf confirming-commit"]
    assert {c.attributes.get("idc.router.name") for c in confirms} == routers
    # Every pending commit of the story is resolved in it: confirmed, or cancelled when a
    # slow step was rolled back and prepared again (seen on a loaded machine).
    resolved = [s for s in trace if s.name in ("netconf confirming-commit",
                                               "netconf cancel-commit")]
    assert {c.attributes["idc.netconf.persist_id"] for c in resolved} >= {
        c.attributes["idc.netconf.persist_id"] for c in commits
    }
    assert _processed(trace, "idc-provisioning", "idc.events.v1.ProvisioningReply")
    for service in ("idc-order", "idc-billing"):
        handled = _processed(trace, service, "idc.events.v1.CircuitActivated")
        assert handled, f"CircuitActivated not handled by {service} in the trace"
        chain = _ancestors(handled[0], spans)
        assert chain[0].attributes.get("idc.event_type") == "idc.events.v1.ProvisioningReply"
        steps = [s.name for s in chain if s.name.startswith("agent ")]
        # The confirms run in parallel: the last one answers the command the coordinator
        # sent on the last prepare's reply, not on the other router's confirm.
        assert steps[0] in {f"agent confirm {r}" for r in routers}, steps
        assert steps[1].startswith("agent prepare "), steps
        assert {f"agent prepare {r}" for r in routers} & set(steps)
        assert chain[-1] == root


def test_no_personal_data_in_spans_or_logs(demo: DemoRun) -> None:
    secrets = [CONTACT_NAME, CONTACT_EMAIL, CONTACT_PHONE]
    key_files = list((demo.directory / "devstack").rglob("*ed25519*"))
    assert key_files, "the devstack keys moved; the credential check would check nothing"
    private_keys = [
        line for path in key_files if not path.name.endswith(".pub")
        for line in path.read_text().splitlines()[1:-1]
    ]
    logs = {p: p.read_text(errors="replace") for p in (demo.directory / "log").glob("*.log")}
    assert set(p.name for p in logs) >= {"order.log", "provisioning.log", "billing.log",
                                          "meter.log"}
    for secret in [*secrets, *private_keys]:
        assert secret.encode() not in demo.raw_spans, "personal data or a key in a span"
        for path, text in logs.items():
            assert secret not in text, f"personal data or a key in {path.name}"
    assert demo.spans, "no span was exported"
