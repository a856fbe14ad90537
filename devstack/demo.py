"""``make demo``: the product's story, told against a fresh stack, step by step.

A customer quotes and orders 500 Mbps from Singapore to Chongqing, both telcos approve
the exact router payloads, both routers are configured (read back), traffic moves through
the circuit and usage appears, the customer upgrades to 1 Gbps, the month is billed, the
invoice is printed and exported as PDF, and the circuit is disconnected until both routers
are clean again. Every step goes through ``idcctl`` (printed as typed) and is checked with
a deadline; the first step that does not happen stops the demo with exit code 1.

The stack (broker, routers, counter agent, services, meter) runs in its own directory
(``--dir``, default a new temporary one, kept afterwards with the logs and the PDF) on
free ports. Needs root, like the counter agent.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import trace
from rich.console import Console
from rich.rule import Rule

from devstack.process import DevstackError
from devstack.run import RunningStack, StackOptions, start_everything
from idc.order.v1 import circuit_pb2
from services.cli.main import run
from services.common.telemetry import configure_telemetry

T = TypeVar("T")
tracer = trace.get_tracer("idcctl.demo")

A_END = "sg-edge-1:xe-0/0/1"
Z_END = "cq-edge-1:XGE0/0/1"
VLAN = 100
METERED = f"xe-0/0/1.{VLAN}"  # the counter agent's veth for the A-end sub-interface
FAR_METERED = f"XGE0/0/1.{VLAN}"  # and for the Z-end one
# A fictitious contact: kept in the order database only, never on events, logs or spans.
CONTACT = "technical,Ann Lee,ann.lee@acme-sg.example,+6561234567"
# The customer's own words: they stay in the order database too, off events and routers.
DESCRIPTION = "Acme replication link to the Chongqing plant"
REFERENCE = "PO-2026-0042"
STEP_DEADLINE_S = 120.0
FRAMES_IN, FRAMES_OUT, FRAME_BYTES = 4000, 1000, 1500


class StepFailed(Exception):
    """A step of the story did not happen."""


def until(what: str, check: Callable[[], T | None], deadline_s: float = STEP_DEADLINE_S) -> T:
    """Poll ``check`` until it returns something; StepFailed after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(0.5)


@dataclass
class Demo:
    stack: RunningStack
    console: Console
    out_dir: Path

    def _flags(self, token: str) -> list[str]:
        return [
            "--token", self.stack.tokens[token].token,
            "--order-address", self.stack.address("order"),
            "--provisioning-address", self.stack.address("provisioning"),
            "--billing-address", self.stack.address("billing"),
        ]

    def _env(self) -> dict[str, str]:
        # idcctl trusts the stack's local CA, as the banner tells a user to.
        return {**os.environ, **self.stack.tls.client_env()}

    def idcctl(self, token: str, *argv: str, expect: int = 0) -> Any:
        """Run one idcctl command in-process as the holder of ``token``, printed as typed;
        returns its data (the reply message)."""
        shown = " ".join(shlex.quote(a) for a in argv)
        self.console.print(f"\n[bold green]$[/bold green] IDC_TOKEN=<{token}> idcctl {shown}")
        code, result = run(
            [*argv, *self._flags(token)], console=self.console, error_console=self.console,
            env=self._env(),
        )
        if code != expect:
            raise StepFailed(f"idcctl {shown} exited {code}, expected {expect}")
        return result.data if result is not None else None

    def quietly(self, token: str, *argv: str) -> Any:
        """The same, unprinted: for polling."""
        code, result = run([*argv, *self._flags(token)], console=Console(quiet=True),
                           error_console=Console(quiet=True), env=self._env())
        if code != 0 or result is None:
            raise StepFailed(f"idcctl {' '.join(argv)} exited {code}")
        return result.data

    def step(self, title: str) -> None:
        self.console.print()
        self.console.print(Rule(f"[bold]{title}[/bold]", align="left"))

    def ok(self, text: str) -> None:
        self.console.print(f"[bold cyan]✓[/bold cyan] {text}")


def approve_both(demo: Demo, order_id: str, show_payload: bool = False) -> None:
    """Each telco's ops find the order in their queue (once provisioning has planned it)
    and approve the hash they reviewed."""
    for ops in ("ops-sg", "ops-cq"):
        def queued(ops: str = ops) -> Any:
            pending = demo.quietly(ops, "ops", "pending").pending_approvals
            # The payload appears once provisioning has planned the order.
            return next(
                (p for p in pending if p.order.id == order_id and p.payload.sha256), None
            )

        until(f"order {order_id} in {ops}'s queue with its payload", queued)
        if show_payload and ops == "ops-sg":
            demo.idcctl(ops, "ops", "show", order_id)
        listing = demo.idcctl(ops, "ops", "pending")
        item = next(p for p in listing.pending_approvals if p.order.id == order_id)
        demo.idcctl(ops, "ops", "approve", order_id, "--sha256", item.payload.sha256,
                    "--comment", f"reviewed the payload for {item.payload.router_name}")


def complete(demo: Demo, order_id: str) -> None:
    demo.idcctl("customer", "customer", "watch", order_id, "--timeout", str(STEP_DEADLINE_S))
    demo.ok(f"order {order_id} COMPLETED")


def router_lines(demo: Demo, circuit_id: str) -> dict[str, str]:
    config = demo.idcctl("ops-sg", "ops", "config", circuit_id)
    return {c.device_name: c.running_config for c in config.configs}


def tell(demo: Demo) -> None:
    """The story; raises StepFailed at the first step that does not happen."""
    circuit_id, since = order_and_activate(demo)
    move_traffic(demo, circuit_id, since)
    upgrade(demo, circuit_id)
    bill_the_month(demo)
    disconnect(demo, circuit_id)


def order_and_activate(demo: Demo) -> tuple[str, str]:
    demo.step("1. The customer looks at the sites and gets a quote for 500 Mbps")
    demo.idcctl("customer", "customer", "sites", "--side", "sg")
    spec = ["--a-end", A_END, "--z-end", Z_END, "--a-vlan", str(VLAN), "--z-vlan", str(VLAN),
            "--term", "12", "--currency", "SGD", "--description", DESCRIPTION,
            "--reference", REFERENCE]
    quote = demo.idcctl("customer", "customer", "quote", *spec, "--bandwidth", "500").quote
    if not quote.feasible:
        raise StepFailed(f"the quote is not feasible: {list(quote.infeasible_reasons)}")

    demo.step("2. The customer orders it")
    order = demo.idcctl("customer", "customer", "order", "--quote", quote.id,
                        "--contact", CONTACT).order
    circuit_id = order.circuit_id

    demo.step("3. Both telcos approve the exact payload for their router")
    approve_both(demo, order.id, show_payload=True)
    complete(demo, order.id)

    demo.step("4. Both routers hold the circuit (read back from their running config)")
    lines = router_lines(demo, circuit_id)
    for router in ("sg-edge-1", "cq-edge-1"):
        if circuit_id not in lines.get(router, ""):
            raise StepFailed(f"{router} does not hold {circuit_id} after activation")
        if DESCRIPTION in lines[router]:
            raise StepFailed(f"{router} carries the customer's description")
    demo.ok("sg-edge-1 and cq-edge-1 both carry the circuit, described by ids only")
    return circuit_id, quote.create_time.ToDatetime(UTC).isoformat()


def move_traffic(demo: Demo, circuit_id: str, since: str) -> None:
    demo.step("5. Traffic moves through the circuit and usage appears")
    agent = demo.stack.counter_agent
    if agent is None:
        raise StepFailed("no counter agent (the demo needs root)")

    def samples() -> Any:
        usage = demo.quietly("customer", "customer", "usage", circuit_id, "--since", since,
                             "--samples")
        return usage.samples or None

    # The meter's first sample means it has a baseline reading of the counters: traffic
    # sent before that would be inside the baseline and never counted.
    until("the meter's first sample of the circuit", samples, deadline_s=60)
    port, far = agent.port("sg-edge-1", METERED), agent.port("cq-edge-1", FAR_METERED)
    sent_in = port.send_from_customer(FRAMES_IN, FRAME_BYTES)
    sent_out = port.send_to_customer(FRAMES_OUT, FRAME_BYTES)
    # What enters at one end leaves at the other: both ends meter the same traffic, so the
    # month reconciles.
    far.send_to_customer(FRAMES_IN, FRAME_BYTES)
    far.send_from_customer(FRAMES_OUT, FRAME_BYTES)
    demo.ok(f"sent {sent_in:,} bytes into and {sent_out:,} bytes out of {METERED} on sg-edge-1, "
            f"the same through {FAR_METERED} on cq-edge-1")

    def metered() -> Any:
        counted = samples() or []
        return counted if sum(s.bytes_in for s in counted) >= sent_in else None

    until("usage samples carrying the traffic", metered, deadline_s=60)
    demo.idcctl("customer", "customer", "usage", circuit_id, "--since", since)


def upgrade(demo: Demo, circuit_id: str) -> None:
    demo.step("6. The customer upgrades to 1 Gbps")
    change = demo.idcctl("customer", "customer", "modify", circuit_id, "--bandwidth", "1000",
                         "--reason", "more replication traffic").order
    approve_both(demo, change.id)
    complete(demo, change.id)
    lines = router_lines(demo, circuit_id)
    if not all("1000000" in lines.get(r, "") for r in ("sg-edge-1", "cq-edge-1")):
        raise StepFailed("the routers do not show 1 Gbps after the change")
    demo.ok("both routers now police at 1 Gbps")


def bill_the_month(demo: Demo) -> None:
    demo.step("7. The month is billed")
    month = datetime.now(UTC).strftime("%Y-%m")
    summary = demo.idcctl("billing", "billing", "run", "--month", month,
                          "--tenant", demo.stack.tokens["customer"].tenant or "")
    if not summary.invoice_ids:
        raise StepFailed("the billing run produced no invoice")
    invoice_id = summary.invoice_ids[0]
    demo.idcctl("billing", "billing", "invoices", invoice_id)
    demo.idcctl("billing", "billing", "finalize", invoice_id)
    exported = demo.idcctl("billing", "billing", "export", invoice_id, "--format", "pdf",
                           "--file", str(demo.out_dir))
    pdf = Path(exported["file"])
    if not pdf.read_bytes().startswith(b"%PDF"):
        raise StepFailed(f"{pdf} is not a PDF")
    demo.idcctl("customer", "customer", "invoices")
    demo.ok(f"invoice exported to {pdf}")


def disconnect(demo: Demo, circuit_id: str) -> None:
    demo.step("8. The customer disconnects; both routers are clean again")
    disconnect = demo.idcctl("customer", "customer", "disconnect", circuit_id,
                             "--reason", "project finished").order
    approve_both(demo, disconnect.id)
    complete(demo, disconnect.id)
    lines = router_lines(demo, circuit_id)
    leftovers = [r for r, text in lines.items() if text.strip()]
    if leftovers:
        raise StepFailed(f"{', '.join(leftovers)} still hold {circuit_id}")
    circuit = demo.quietly("customer", "customer", "circuits", circuit_id).circuit
    if circuit.state != circuit_pb2.CIRCUIT_STATE_DISCONNECTED:
        raise StepFailed(f"circuit {circuit_id} is {circuit.state}, not DISCONNECTED")
    demo.idcctl("ops-sg", "ops", "check-sync")
    demo.ok("nothing of the circuit is left on sg-edge-1 or cq-edge-1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where the stack and the PDF go (default: "
                                                 "a new temporary directory, kept)")
    args = parser.parse_args(argv)
    out_dir = (args.dir or Path(tempfile.mkdtemp(prefix="idc-demo-"))).resolve()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    telemetry = configure_telemetry("idcctl")
    started = time.monotonic()
    try:
        console.print(f"Starting a fresh stack under {out_dir} ...")
        with start_everything(StackOptions(var_dir=out_dir, fixed_ports=False, fast=True,
                                           meter_interval_s=2)) as stack:
            console.print(f"Stack up in {time.monotonic() - started:.1f} s: order "
                          f"{stack.address('order')}, provisioning "
                          f"{stack.address('provisioning')}, billing {stack.address('billing')}")
            with tracer.start_as_current_span("demo story"):
                tell(Demo(stack, console, out_dir))
    except (StepFailed, DevstackError) as error:
        console.print(f"\n[bold red]demo failed:[/bold red] {error}")
        console.print(f"logs: {out_dir / 'log'}")
        return 1
    finally:
        telemetry.shutdown()
    console.print(f"\n[bold]The whole story took {time.monotonic() - started:.0f} s.[/bold] "
                  f"Logs, databases and the invoice PDF are in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
