"""The contracts in proto/ and the generated package idc/ stay consistent and well-formed.

* idc/ is regenerated from proto/ (tools/protogen.py --check), and the check really fails
  when a proto changes or a generated file is edited;
* no float/double anywhere (money is idc.type.v1.Money, bandwidth is integer *_mbps);
* every List call is paginated; every service has its RPCs with the right streaming flags;
* events carry no personal data;
* buf lint (and buf format) pass. buf comes from npm (`npm ci`); without it the test fails,
  it is never skipped.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor
from google.protobuf.descriptor import FieldDescriptor

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOGEN = REPO_ROOT / "tools" / "protogen.py"
PROTO_DIR = REPO_ROOT / "proto"
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"

# Fields of type float/double that are allowed because they are not money. Keep it empty:
# rates and factors are decimal strings, bandwidth is integer Mbps.
FLOAT_ALLOWLIST: frozenset[str] = frozenset()

# Field-name fragments that mean money; such a field must be idc.type.v1.Money.
MONEY_NAME_PARTS = ("price", "amount", "mrc", "nrc", "subtotal", "total", "tax", "cost")
# ... except these, which are not amounts.
MONEY_NAME_EXCEPTIONS = frozenset(
    {
        "idc.billing.v1.Invoice.tax_rate",
        "idc.billing.v1.CreditNote.tax_rate",
        "idc.billing.v1.BillingProgress.circuits_total",
        "idc.billing.v1.BillingProgress.invoices_total",
        "idc.billing.v1.BillingSummary.totals",
        "idc.order.v1.Price.price_book_version",
        "idc.events.v1.PriceTerms.price_book_version",
    }
)

PRICE_BLOCKS = frozenset({"idc.order.v1.Price", "idc.events.v1.PriceTerms"})

INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
    }
)

# Field-name fragments that would be personal data on an event. The circuit description is
# allowed: it is router configuration and has to reach both routers.
PERSONAL_NAME_PARTS = (
    "email",
    "phone",
    "contact",
    "customer_reference",
    "address",
    "person",
    "full_name",
)

EXPECTED_SERVICES: dict[str, set[str]] = {
    "idc.order.v1.WebhookService": {
        "CreateSubscription", "ListSubscriptions", "DeleteSubscription", "RotateSecret",
        "ListDeliveries", "SendTestDelivery", "ReplayDeliveries",
    },
    "idc.order.v1.OrderService": {
        "ListSites",
        "GetQuote",
        "CreateOrder",
        "GetOrder",
        "ListOrders",
        "WatchOrder",
        "CancelOrder",
        "ModifyBandwidth",
        "DisconnectCircuit",
        "PreviewChange",
        "GetCircuit",
        "ListCircuits",
        "GetCapacity",
    },
    "idc.ops.v1.ApprovalService": {
        "ListPendingApprovals",
        "Approve",
        "Reject",
        "ListApprovalHistory",
    },
    "idc.ops.v1.AuditService": {"ListChainEntries"},
    "idc.ops.v1.EventAdminService": {
        "ListDeadLetters",
        "GetDeadLetter",
        "ReplayDeadLetter",
        "RepublishOutbox",
    },
    "idc.ops.v1.TokenService": {"IssueToken", "ListTokens", "RotateToken", "RevokeToken"},
    "idc.provisioning.v1.ProvisioningService": {
        "ListDevices",
        "DryRun",
        "CheckSync",
        "Redeploy",
        "GetCircuitConfig",
        "ListSyncStatus",
        "ListRepairs",
        "ApproveRepair",
        "RejectRepair",
    },
    "idc.billing.v1.BillingService": {
        "GetUsage",
        "RunBillingCycle",
        "ListInvoices",
        "GetInvoice",
        "FinalizeInvoice",
        "ExportInvoice",
        "IssueCreditNote",
        "ListCreditNotes",
        "GetCreditNote",
        "ExportCreditNote",
        "StartBillingClose",
        "GetBillingJob",
        "FinalizeBillingClose",
        "GetUsageCompleteness",
        "GetReconciliation",
    },
}
SERVER_STREAMING = {
    "idc.order.v1.OrderService.WatchOrder",
    "idc.billing.v1.BillingService.RunBillingCycle",
}

EXPECTED_EVENTS = {
    "idc.events.v1.OrderCreated",
    "idc.events.v1.OrderApproved",
    "idc.events.v1.OrderRejected",
    "idc.events.v1.OrderCancelled",
    "idc.events.v1.ProvisioningCommand",
    "idc.events.v1.ProvisioningReply",
    "idc.events.v1.CircuitActivated",
    "idc.events.v1.CircuitModified",
    "idc.events.v1.CircuitDisconnected",
    "idc.events.v1.ProvisioningFailed",
    "idc.events.v1.ProvisioningProgress",
    "idc.events.v1.UsageSample",
}


def _protogen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROTOGEN), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


# --------------------------------------------------------------------------- staleness


def test_generated_package_is_up_to_date() -> None:
    result = _protogen("--check")
    assert result.returncode == 0, (
        "idc/ is stale; run `.venv/bin/python tools/protogen.py` and commit the result\n"
        + result.stdout
        + result.stderr
    )


def test_check_fails_when_a_proto_changes(tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, protos)
    money = protos / "idc" / "type" / "v1" / "money.proto"
    money.write_text(
        money.read_text(encoding="utf-8") + "\nmessage StaleCheckProbe {\n  string x = 1;\n}\n",
        encoding="utf-8",
    )
    result = _protogen("--check", "--proto-dir", str(protos))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "differs: idc/type/v1/money_pb2.py" in result.stderr


def test_check_fails_when_generated_code_is_edited_added_or_removed(tmp_path: Path) -> None:
    package = tmp_path / "idc"
    shutil.copytree(
        REPO_ROOT / "idc", package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (package / "order" / "v1" / "order_pb2.py").write_text("# hand edit\n", encoding="utf-8")
    (package / "order" / "v1" / "leftover_pb2.py").write_text("", encoding="utf-8")
    (package / "type" / "v1" / "side_pb2.pyi").unlink()
    result = _protogen("--check", "--out-dir", str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "differs: idc/order/v1/order_pb2.py" in result.stderr
    assert "stale (not generated): idc/order/v1/leftover_pb2.py" in result.stderr
    assert "missing: idc/type/v1/side_pb2.pyi" in result.stderr


def test_regenerate_removes_stale_files(tmp_path: Path) -> None:
    package = tmp_path / "idc"
    (package / "gone" / "v1").mkdir(parents=True)
    (package / "gone" / "v1" / "old_pb2.py").write_text("", encoding="utf-8")
    result = _protogen("--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (package / "gone").exists()
    assert (package / "order" / "v1" / "order_service_pb2_grpc.py").is_file()
    assert _protogen("--check", "--out-dir", str(tmp_path)).returncode == 0


def test_package_header_says_generated() -> None:
    import idc

    assert "generated by tools/protogen.py from proto/; do not edit" in (idc.__doc__ or "")


# --------------------------------------------------------------------------- descriptors


def _generated_modules() -> list[str]:
    import idc

    return sorted(
        info.name
        for info in pkgutil.walk_packages(idc.__path__, prefix="idc.")
        if info.name.endswith("_pb2")
    )


def _files() -> list[descriptor.FileDescriptor]:
    return [importlib.import_module(name).DESCRIPTOR for name in _generated_modules()]


def _messages() -> Iterator[descriptor.Descriptor]:
    def walk(message: descriptor.Descriptor) -> Iterator[descriptor.Descriptor]:
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for file in _files():
        for message in file.message_types_by_name.values():
            yield from walk(message)


def _services() -> dict[str, descriptor.ServiceDescriptor]:
    return {
        service.full_name: service
        for file in _files()
        for service in file.services_by_name.values()
    }


def test_every_proto_has_a_generated_module() -> None:
    protos = {p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto")}
    generated = {file.name for file in _files()}
    assert protos == generated


def test_no_float_or_double_fields() -> None:
    offenders = [
        field.full_name
        for message in _messages()
        for field in message.fields
        if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
        and field.full_name not in FLOAT_ALLOWLIST
    ]
    assert not offenders, f"float/double fields (use Money or a decimal string): {offenders}"


def test_money_fields_use_money_type() -> None:
    offenders = []
    for message in _messages():
        if message.full_name == "idc.type.v1.Money":
            continue
        for field in message.fields:
            name = field.name
            if field.full_name in MONEY_NAME_EXCEPTIONS:
                continue
            if not any(part in name for part in MONEY_NAME_PARTS):
                continue
            is_money = (
                field.type == FieldDescriptor.TYPE_MESSAGE
                and field.message_type.full_name == "idc.type.v1.Money"
            )
            # A whole price structure (idc.order.v1.Price, idc.events.v1.PriceTerms) is fine.
            is_price_block = (
                field.type == FieldDescriptor.TYPE_MESSAGE
                and field.message_type.full_name in PRICE_BLOCKS
            )
            if not (is_money or is_price_block):
                offenders.append(field.full_name)
    assert not offenders, f"money-like fields that are not idc.type.v1.Money: {offenders}"


def test_bandwidth_fields_are_integer_mbps() -> None:
    offenders = [
        field.full_name
        for message in _messages()
        for field in message.fields
        if field.name.endswith("_mbps")
        and not field.name.endswith("_per_mbps")  # a price per Mbps is Money
        and field.type not in INTEGER_TYPES
    ]
    assert not offenders, f"*_mbps fields must be integers: {offenders}"
    bad_names = [
        field.full_name
        for message in _messages()
        for field in message.fields
        if "bandwidth" in field.name and not field.name.endswith("_mbps")
    ]
    assert not bad_names, f"bandwidth fields must be named *_mbps: {bad_names}"


def test_list_calls_are_paginated() -> None:
    list_requests = [
        m for m in _messages() if m.name.startswith("List") and m.name.endswith("Request")
    ]
    list_responses = [
        m for m in _messages() if m.name.startswith("List") and m.name.endswith("Response")
    ]
    assert list_requests and list_responses
    for request in list_requests:
        fields = request.fields_by_name
        assert "page_size" in fields, f"{request.full_name} lacks page_size"
        assert fields["page_size"].type == FieldDescriptor.TYPE_INT32, request.full_name
        assert "page_token" in fields, f"{request.full_name} lacks page_token"
        assert fields["page_token"].type == FieldDescriptor.TYPE_STRING, request.full_name
    for response in list_responses:
        fields = response.fields_by_name
        assert "next_page_token" in fields, f"{response.full_name} lacks next_page_token"
        assert fields["next_page_token"].type == FieldDescriptor.TYPE_STRING
    for service in _services().values():
        for method in service.methods:
            if method.name.startswith("List"):
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"


def test_services_have_their_rpcs() -> None:
    services = _services()
    assert set(services) == set(EXPECTED_SERVICES)
    for name, expected in EXPECTED_SERVICES.items():
        assert {m.name for m in services[name].methods} == expected, name


def test_streaming_flags() -> None:
    import grpc  # noqa: F401  (the _grpc modules need it)

    for service in _services().values():
        for method in service.methods:
            full = f"{service.full_name}.{method.name}"
            assert method.client_streaming is False, full
            assert method.server_streaming is (full in SERVER_STREAMING), full


def test_grpc_modules_expose_stubs_and_servicers() -> None:
    for name in EXPECTED_SERVICES:
        package, _, service = name.rpartition(".")
        module_name = next(
            m
            for m in _generated_modules()
            if m.startswith(package + ".")
            and service in importlib.import_module(m).DESCRIPTOR.services_by_name
        )
        grpc_module = importlib.import_module(module_name + "_grpc")
        assert hasattr(grpc_module, f"{service}Stub")
        assert hasattr(grpc_module, f"{service}Servicer")
        assert hasattr(grpc_module, f"add_{service}Servicer_to_server")


def test_events_exist_and_carry_id_and_time() -> None:
    events = {m.full_name: m for m in _messages() if m.full_name.startswith("idc.events.v1.")}
    assert set(events) >= EXPECTED_EVENTS
    for name in EXPECTED_EVENTS:
        fields = events[name].fields_by_name
        assert fields["event_id"].type == FieldDescriptor.TYPE_STRING, name
        occurred = fields["occurred_at"]
        assert occurred.message_type.full_name == "google.protobuf.Timestamp", name


def test_events_carry_no_personal_data() -> None:
    def reachable(message: descriptor.Descriptor, seen: set[str]) -> Iterator[FieldDescriptor]:
        if message.full_name in seen:
            return
        seen.add(message.full_name)
        for field in message.fields:
            yield field
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                yield from reachable(field.message_type, seen)

    offenders = set()
    for message in _messages():
        if not message.full_name.startswith("idc.events.v1."):
            continue
        for field in reachable(message, set()):
            if any(part in field.name for part in PERSONAL_NAME_PARTS):
                offenders.add(field.full_name)
    assert not offenders, f"personal data / free text on events: {sorted(offenders)}"


def test_enums_start_with_unspecified() -> None:
    for file in _files():
        enums = list(file.enum_types_by_name.values())
        enums += [e for m in _messages() for e in m.enum_types if m.file is file]
        for enum in enums:
            zero = enum.values_by_number[0]
            assert zero.name.endswith("_UNSPECIFIED"), enum.full_name


# --------------------------------------------------------------------------- buf


def _require_buf() -> Path:
    if not BUF.exists():
        # Never a skip, on CI (CI=true) or anywhere else: a missing linter is a failure.
        pytest.fail(
            f"{BUF.relative_to(REPO_ROOT)} not found: run `npm ci` in {REPO_ROOT} "
            "(or `make tools`) to install the pinned buf"
            + (" [CI=true]" if os.environ.get("CI") == "true" else "")
        )
    return BUF


def test_buf_lint() -> None:
    buf = _require_buf()
    result = subprocess.run(
        [str(buf), "lint", "proto"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, "buf lint failed:\n" + result.stdout + result.stderr


def test_buf_format() -> None:
    buf = _require_buf()
    result = subprocess.run(
        [str(buf), "format", "--diff", "--exit-code", "proto"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, (
        "proto/ is not buf-formatted; run `node_modules/.bin/buf format -w proto`:\n"
        + result.stdout
        + result.stderr
    )
