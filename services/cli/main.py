"""``idcctl``: the command line of the IDC bandwidth orchestrator, for every role.

    idcctl customer sites | quote | order | orders | watch | circuits | modify | disconnect
                   | preview | cancel | usage | invoices | invoice export
    idcctl ops     pending | show | approve | reject | devices | check-sync | sync
                   | redeploy | repair list | repair approve | repair reject | history
                   | config | capacity | dlq list | dlq show | dlq replay | outbox republish
    idcctl billing run | close | job | completeness | reconcile | invoices | export
                   | finalize | credit-note issue | list | show | export
    idcctl admin   tokens issue | list | rotate | revoke | bootstrap | keygen
                   | contacts reencrypt
    idcctl audit   verify
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from rich.console import Console

from idc.billing.v1 import invoice_pb2
from idc.order.v1 import circuit_pb2, order_pb2
from services.cli import (
    audit,
    changes,
    close,
    commands,
    credit_notes,
    events,
    reconcile,
    repairs,
    tokens,
)
from services.cli.client import TLS_FLAGS, Api, Connection, story_context
from services.cli.errors import EXIT_CODE_HELP, CallFailure, CliError, ExitCode, failure_of
from services.cli.render import Result, dumps
from services.common.config import ConfigError
from services.common.telemetry import configure_telemetry

DESCRIPTION = """The IDC bandwidth orchestrator's command line.

Enterprise customers order and manage circuits on the Singapore-Chongqing channel, telco
ops approve and watch the routers, the billing team closes the month, admins issue tokens.
Every read takes --output json for scripts."""

EPILOG = f"""environment:
  IDC_TOKEN                 bearer token (or --token)
  IDC_ORDER_ADDRESS         order service host:port (default 127.0.0.1:50051)
  IDC_PROVISIONING_ADDRESS  provisioning service host:port (default 127.0.0.1:50052)
  IDC_BILLING_ADDRESS       billing service host:port (default 127.0.0.1:50053)
  IDC_METER_ADDRESS         meter host:port (default 127.0.0.1:50054; `ops dlq`, `ops outbox`)
  IDC_DEFAULT_DEADLINE_S    deadline of each call in seconds (default 30)
  IDC_AUDIT_PUBLIC_KEY_DIR  each telco's audit public key, <telco>.pub.pem (`audit verify`)
  IDC_OUTPUT                table or json when --output is not given
  TRACEPARENT               W3C trace context to continue (puts a script's calls in one trace)

{EXIT_CODE_HELP}

try (with the tokens `make run` prints):
  IDC_TOKEN=<customer token> idcctl customer sites
  IDC_TOKEN=<ops-sg token>   idcctl ops pending
  IDC_TOKEN=<billing token>  idcctl billing close --month 2026-05"""


def _state_names(enum_type: Any, prefix: str) -> list[str]:
    """The choices a state filter accepts (the enum without its UNSPECIFIED zero)."""
    return [name.removeprefix(prefix) for name, number in enum_type.items() if number]


ORDER_STATES = _state_names(order_pb2.OrderState, "ORDER_STATE_")
CIRCUIT_STATES = _state_names(circuit_pb2.CircuitState, "CIRCUIT_STATE_")
INVOICE_STATES = _state_names(invoice_pb2.InvoiceState, "INVOICE_STATE_")


def _common_options() -> argparse.ArgumentParser:
    """Options accepted before or after any subcommand (SUPPRESS keeps an earlier value)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--output", "-o", choices=["table", "json"], default=argparse.SUPPRESS,
                       help="table for people (default), json for scripts")
    group.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (IDC_TOKEN)")
    group.add_argument("--order-address", default=argparse.SUPPRESS, metavar="HOST:PORT",
                       help="order service (IDC_ORDER_ADDRESS)")
    group.add_argument("--provisioning-address", default=argparse.SUPPRESS,
                       metavar="HOST:PORT", help="provisioning service (IDC_PROVISIONING_ADDRESS)")
    group.add_argument("--billing-address", default=argparse.SUPPRESS, metavar="HOST:PORT",
                       help="billing service (IDC_BILLING_ADDRESS)")
    group.add_argument("--deadline", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                       help="deadline of each call (IDC_DEFAULT_DEADLINE_S, 30)")
    group.add_argument("--ca-file", default=argparse.SUPPRESS, metavar="PATH",
                       help="PEM CA bundle the servers are verified with (IDC_TLS_CA_FILE; "
                       "default: the system's roots)")
    group.add_argument("--client-cert", default=argparse.SUPPRESS, metavar="PATH",
                       help="client certificate to present, partner mTLS "
                       "(IDC_TLS_CLIENT_CERT_FILE; with --client-key)")
    group.add_argument("--client-key", default=argparse.SUPPRESS, metavar="PATH",
                       help="its private key (IDC_TLS_CLIENT_KEY_FILE)")
    return common


class _Builder:
    """Adds leaf commands with the common options and a handler."""

    def __init__(self, common: argparse.ArgumentParser) -> None:
        self.common = common

    def group(
        self, parent: Any, name: str, help_text: str
    ) -> Any:
        parser = parent.add_parser(
            name, help=help_text, description=help_text, parents=[self.common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    def leaf(
        self, parent: Any, name: str, handler: commands.Command, help_text: str,
        description: str = "",
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=description or help_text,
            parents=[self.common], formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(handler=handler)
        return parser


def _spec_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--a-end", required=required, metavar="PORT_ID",
                        help="Singapore port, e.g. sg-edge-1:xe-0/0/1 (see `customer sites`)")
    parser.add_argument("--z-end", required=required, metavar="PORT_ID",
                        help="Chongqing port, e.g. cq-edge-1:XGE0/0/1")
    parser.add_argument("--bandwidth", type=int, required=required, metavar="MBPS",
                        help="committed bandwidth (CIR) in Mbps")
    parser.add_argument("--burst", type=int, default=0, metavar="MBPS",
                        help="burst allowance above the CIR (default 0)")
    parser.add_argument("--term", type=int, default=12, metavar="MONTHS",
                        help="contract term in months (default 12)")
    parser.add_argument("--currency", default="SGD", help="billing currency (default SGD)")
    parser.add_argument("--a-vlan", type=int, metavar="VLAN", help="VLAN wanted on the A-end")
    parser.add_argument("--z-vlan", type=int, metavar="VLAN", help="VLAN wanted on the Z-end")
    parser.add_argument("--reference", default="", help="your own reference (project, note; "
                        "stays with the order)")
    parser.add_argument("--purchase-order", default="",
                        help="your purchase-order number, printed on the circuit's invoices")
    parser.add_argument("--description", default="", help="free text")


def _invoice_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("invoice_id", nargs="?", help="show this invoice with its lines")
    parser.add_argument("--month", type=commands.year_month, metavar="YYYY-MM")
    parser.add_argument("--state", choices=INVOICE_STATES)
    parser.add_argument("--tenant", help="only this tenant (billing admins)")
    parser.add_argument("--limit", type=int, default=100, help="at most this many")


def _export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("invoice_id")
    parser.add_argument("--format", choices=sorted(commands.EXPORT_FORMATS), default="pdf")
    parser.add_argument("--file", dest="output_file", metavar="PATH",
                        help="where to write it (a file or a directory; default: the "
                             "server's suggested name in the current directory)")


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="idcctl", description=DESCRIPTION, epilog=EPILOG, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    builder = _Builder(common)
    _customer_commands(builder, roles)
    _ops_commands(builder, roles)
    _billing_commands(builder, roles)
    _admin_commands(builder, roles)
    audit.add_commands(builder, roles)
    return parser


def _modify_command(b: _Builder, customer: Any) -> None:
    p = b.leaf(
        customer, "modify", commands.modify, "change a circuit's bandwidth",
        "Change a circuit's bandwidth: once both telcos approved, or from --start on. With\n"
        "--end it is a boost: the bandwidth (higher than now) holds from --start to --end\n"
        "and then reverts by itself; billed per started hour on the added Mbps.",
    )
    p.add_argument("circuit_id")
    p.add_argument("--bandwidth", type=int, required=True, metavar="MBPS")
    p.add_argument("--burst", type=int, metavar="MBPS", help="new burst (default: unchanged)")
    p.add_argument("--start", type=commands.iso_time, metavar="ISO",
                   help="when it takes effect (default: once approved)")
    p.add_argument("--end", type=commands.iso_time, metavar="ISO",
                   help="a boost: when it reverts (needs --start)")
    p.add_argument("--reason", default="")
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    changes.add_validate_only(p)


def _customer_commands(b: _Builder, roles: Any) -> None:
    customer = b.group(roles, "customer", "order and manage circuits (customer token)")
    p = b.leaf(customer, "sites", commands.sites, "sites and ports with free bandwidth and VLANs")
    p.add_argument("--side", choices=sorted(commands.SIDES))
    p = b.leaf(customer, "quote", commands.quote, "price a circuit (reserves nothing)")
    _spec_options(p, required=True)
    p = b.leaf(
        customer, "order", commands.place_order, "order a circuit",
        "Order a circuit from a quote (--quote) or a spec (--a-end, --z-end, --bandwidth).\n"
        "Capacity and VLANs are reserved at once; both telcos then approve.",
    )
    p.add_argument("--quote", metavar="QUOTE_ID", help="order this quote")
    _spec_options(p, required=False)
    p.add_argument("--contact", type=commands.contact, action="append", default=[],
                   metavar="ROLE,NAME,EMAIL,PHONE", help="a contact (repeatable)")
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    changes.add_validate_only(p)
    p = b.leaf(customer, "orders", commands.orders, "list orders, or show one")
    p.add_argument("order_id", nargs="?", help="show this order with approvals and audit trail")
    p.add_argument("--state", choices=ORDER_STATES, action="append", default=[])
    p.add_argument("--circuit", help="only orders of this circuit")
    p.add_argument("--tenant", help="only this tenant (ops and billing)")
    p.add_argument("--limit", type=int, default=50, help="at most this many")
    p = b.leaf(
        customer, "watch", commands.watch, "follow an order until it ends",
        "Print every change of an order until it ends. Exit code 0 if it COMPLETED,\n"
        "8 if it ended REJECTED, FAILED or CANCELLED.",
    )
    p.add_argument("order_id")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up after this long (default 600)")
    p = b.leaf(customer, "cancel", commands.cancel, "cancel an order before provisioning")
    p.add_argument("order_id")
    p.add_argument("--reason", default="", help="recorded in the audit trail")
    p = b.leaf(customer, "circuits", commands.circuits, "list circuits, or show one")
    p.add_argument("circuit_id", nargs="?")
    p.add_argument("--state", choices=CIRCUIT_STATES, action="append", default=[])
    p.add_argument("--tenant", help="only this tenant (ops and billing)")
    p.add_argument("--limit", type=int, default=50, help="at most this many")
    _modify_command(b, customer)
    p = b.leaf(customer, "disconnect", commands.disconnect, "disconnect a circuit")
    p.add_argument("circuit_id")
    p.add_argument("--reason", default="")
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    changes.add_validate_only(p)
    changes.add_commands(b, customer)
    p = b.leaf(customer, "usage", commands.usage, "a circuit's usage and 95th percentile")
    p.add_argument("circuit_id")
    p.add_argument("--since", type=commands.moment,
                   help="ISO time or an age such as 30m, 2h (default: 1d)")
    p.add_argument("--until", type=commands.moment, help="ISO time (default: now)")
    p.add_argument("--samples", action="store_true", help="list every sample")
    p = b.leaf(customer, "invoices", commands.invoices, "list your invoices, or show one")
    _invoice_list_options(p)
    invoice = b.group(customer, "invoice", "one invoice")
    _export_options(b.leaf(invoice, "export", commands.export_invoice,
                           "download an invoice as PDF, CSV or JSON"))


def _ops_commands(b: _Builder, roles: Any) -> None:
    ops = b.group(roles, "ops", "approve orders and watch the routers (ops token)")
    p = b.leaf(ops, "pending", commands.pending, "orders waiting for your telco's approval")
    p.add_argument("--limit", type=int, default=100)
    p = b.leaf(ops, "show", commands.show_pending,
               "an order with the exact payload (dry run) for each router")
    p.add_argument("order_id")
    p = b.leaf(
        ops, "approve", commands.approve, "approve an order for your telco",
        "Approve an order for your telco. --sha256 is the payload hash you reviewed\n"
        "(`ops pending` or `ops show`): if the payload changed since, the server refuses.\n"
        "A boost is approved once with its revert: give the revert's hash as\n"
        "--revert-sha256 (its order is listed by `ops pending` too).",
    )
    p.add_argument("order_id")
    p.add_argument("--sha256", required=True, help="hash of the payload you reviewed")
    p.add_argument("--revert-sha256", metavar="SHA256",
                   help="a boost: hash of its revert's payload, approved with it")
    p.add_argument("--comment", default="")
    p = b.leaf(ops, "reject", commands.reject, "reject an order (the customer sees why)")
    p.add_argument("order_id")
    p.add_argument("--reason", required=True)
    p = b.leaf(ops, "devices", commands.devices, "edge routers and whether they answer")
    p.add_argument("--side", choices=sorted(commands.SIDES))
    p = b.leaf(ops, "check-sync", commands.check_sync,
               "compare each router's running configuration with the intended circuits")
    p.add_argument("device", nargs="*", help="only these routers")
    p = b.leaf(ops, "sync", commands.sync_status,
               "per circuit and router: in sync, drifted or unknown, as the drift watch "
               "last saw it (since when, last seen in sync)")
    p.add_argument("--circuit", help="only this circuit")
    p.add_argument("--not-in-sync", action="store_true", help="only drifted or unknown ends")
    p = b.leaf(ops, "redeploy", commands.redeploy,
               "request a repair: push a circuit's intended configuration to its routers "
               "again once each telco's ops approved (`ops repair`)")
    p.add_argument("circuit_id")
    p.add_argument("--dry-run", action="store_true", help="only render the payloads")
    p = b.leaf(ops, "config", commands.circuit_config,
               "a circuit's running configuration as read from each router")
    p.add_argument("circuit_id")
    p = b.leaf(ops, "capacity", commands.capacity, "channel and port capacity")
    p.add_argument("--port", action="append", default=[], help="only these ports")
    p.add_argument("--until", type=commands.iso_time, metavar="ISO",
                   help="also the free bandwidth over time, from now to this time")
    repairs.add_commands(b, ops)
    events.add_commands(b, ops)


def _billing_commands(b: _Builder, roles: Any) -> None:
    billing = b.group(roles, "billing", "close the month (billing admin token)")
    p = b.leaf(billing, "run", commands.billing_run, "compute a month's invoices, with progress")
    p.add_argument("--month", type=commands.year_month, metavar="YYYY-MM",
                   help="month to bill (default: the previous month, UTC)")
    p.add_argument("--entity", default="", help="billing entity (default: all)")
    p.add_argument("--tenant", action="append", default=[], help="only these tenants")
    p.add_argument("--as-of", type=commands.moment, help="usage cut-off (default: now)")
    p.add_argument("--dry-run", action="store_true", help="compute and report, store nothing")
    p = b.leaf(billing, "invoices", commands.invoices, "list invoices, or show one")
    _invoice_list_options(p)
    _export_options(b.leaf(billing, "export", commands.export_invoice,
                           "download an invoice as PDF, CSV or JSON"))
    close.add_commands(b, billing)
    credit_notes.add_commands(b, billing)
    reconcile.add_commands(b, billing)


def _admin_commands(b: _Builder, roles: Any) -> None:
    admin = b.group(roles, "admin", "administration: tokens through the issuer (admin token), "
                                    "contacts re-encryption (the order database)")
    tokens.add_commands(b, admin)
    contacts = b.group(admin, "contacts", "customer contacts, sealed in the order database")
    b.leaf(contacts, "reencrypt", commands.contacts_reencrypt,
           "seal every order's contacts again with the active key of the key set "
           "(IDC_ORDER_CONTACT_KEYS_FILE, IDC_ORDER_DATABASE_URL), after a key rotation")


def _print_failure(errors: Console, failure: CallFailure, as_json: bool) -> None:
    if as_json:
        print(dumps({"error": failure.as_dict()}), file=errors.file, flush=True)
    else:
        for line in failure.lines():
            errors.print(line, markup=False, highlight=False, soft_wrap=True)


def run(
    argv: Sequence[str] | None = None,
    console: Console | None = None,
    error_console: Console | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, Result | None]:
    """Parse, call, print; returns the exit code and the result (for ``make demo``).
    ``env`` (default: this process's) gives the connection settings flags leave open."""
    args = build_parser().parse_args(argv)
    as_json = getattr(args, "output", os.environ.get("IDC_OUTPUT", "table")) == "json"
    console = console or Console(soft_wrap=as_json)
    errors = error_console or Console(stderr=True)
    try:
        connection = Connection.resolve(
            {
                "order": getattr(args, "order_address", None),
                "provisioning": getattr(args, "provisioning_address", None),
                "billing": getattr(args, "billing_address", None),
            },
            getattr(args, "token", None),
            getattr(args, "deadline", None),
            env,
            {flag: getattr(args, flag[2:].replace("-", "_"), None) for flag in TLS_FLAGS},
        )
    except CliError as error:
        errors.print(f"error: {error.message}", markup=False)
        return error.exit_code, None
    api = Api(connection)
    ctx = commands.Context(api, console, as_json)
    token = otel_context.attach(story_context() or otel_context.get_current())
    try:
        result = args.handler(ctx, args)
    except grpc.RpcError as error:
        service = _service_of(args)
        failure = failure_of(error, f"the {service} service at {connection.addresses[service]}")
        _print_failure(errors, failure, as_json)
        return failure.exit_code, None
    except (CliError, ConfigError) as error:
        message = error.message if isinstance(error, CliError) else str(error)
        code = error.exit_code if isinstance(error, CliError) else ExitCode.USAGE
        _print_failure(errors, CallFailure("LOCAL", message, exit_code=code), as_json)
        return code, None
    finally:
        otel_context.detach(token)
        api.close()
    if result.data is not None:
        if as_json:
            print(dumps(result.data), file=console.file, flush=True)
        else:
            result.render(console)
    return result.exit_code, result


def _service_of(args: argparse.Namespace) -> str:
    target: str | None = getattr(args, "target_service", None)
    if target is not None:
        return target
    handler = args.handler
    if handler in (commands.devices, commands.check_sync, commands.sync_status, commands.redeploy,
                   commands.circuit_config, commands.show_pending):
        return "provisioning"
    if handler in (commands.usage, commands.invoices, commands.export_invoice,
                   commands.finalize, commands.billing_run):
        return "billing"
    return "order"


def main(argv: Sequence[str] | None = None) -> int:
    telemetry = configure_telemetry("idcctl")
    try:
        code, _ = run(argv)
        return code
    except KeyboardInterrupt:
        return 130
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(main())
