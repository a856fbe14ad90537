"""``make run``: the devstack and every service on one machine, until Ctrl-C.

Data lives under ``var/`` (SQLite files, logs, the devstack's keys, the demo tokens), so a
second start reuses it. The routers start empty every time (their datastores live in
memory), so after the services are up the runner re-applies the ACTIVE circuits the
routers lack through provisioning's Redeploy (see ``reapply_active_circuits``) and says
how many in the banner.
Every child process is stopped on exit, and dies with us if we are killed.

:func:`start_everything` is the same stack as a context manager, for ``make demo`` and
the end-to-end tests (own var dir, free ports, faster polling).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc

from devstack.certs import DevstackTls, ensure_devstack_tls
from devstack.counters import CounterAgent, start_counter_agent
from devstack.process import DevstackError, free_port, wait_for_port
from devstack.services import (
    REPO_ROOT,
    ServiceProcess,
    start_service,
    terminate_all,
    wait_serving,
)
from devstack.stack import Devstack, start_devstack
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from services.billing.meter.config import dump_routers
from services.cli.client import Api, Connection
from services.cli.tokens import DemoToken, describe, ensure_demo_tokens
from services.common.config import KafkaSettings
from services.common.events.topics import ALL_TOPICS, ensure_topics, revocation_topic_configs
from services.common.service_table import API_SERVICES, CONSOLE, METER, ServiceEntry
from services.common.tokens import (
    DEV_MODE_VAR,
    KEYS_VAR,
    SIGNING_KEY_VAR,
    SigningKey,
    TokenSettings,
)

log = logging.getLogger("devstack")

CATALOGUE = REPO_ROOT / "services" / "order" / "data" / "catalogue.toml"
# Sub-interfaces the counter agent backs with a veth, per Singapore port: the first VLANs
# of each port's range, which is what the order service assigns first.
METERED_VLANS_PER_PORT = 3


@dataclass(frozen=True)
class StackOptions:
    """How to run the stack. Defaults are ``make run``'s: fixed ports, var/ under the repo."""

    var_dir: Path
    fixed_ports: bool = True
    meter_interval_s: int = 5
    # Extra variables for every service (e.g. OTEL_* in the trace test).
    env: Mapping[str, str] = field(default_factory=dict)
    # Short consumer-group timings (tests and the demo) instead of make run's.
    fast: bool = False


@dataclass
class RunningStack:
    devstack: Devstack
    services: dict[str, ServiceProcess]
    tokens: dict[str, DemoToken]
    var_dir: Path
    # The local CA and the services' certificate (var/tls): every service serves TLS.
    tls: DevstackTls
    counter_agent: CounterAgent | None = None
    notes: list[str] = field(default_factory=list)
    # host:port of the order service's partner REST facade (IDC_ORDER_REST_ADDRESS).
    rest_address: str = ""

    def address(self, service: str) -> str:
        return self.services[service].address

    def cli_env(self, token: str = "customer") -> dict[str, str]:
        """Variables that point idcctl at this stack with one of the demo tokens."""
        env = {
            f"IDC_{service.name.upper()}_ADDRESS": self.address(service.name)
            for service in API_SERVICES
        }
        env["IDC_METER_ADDRESS"] = self.address("billing.meter")
        env["IDC_TOKEN"] = self.tokens[token].token
        # `idcctl audit verify` checks approvals with the development keys' public halves.
        env["IDC_AUDIT_PUBLIC_KEY_DIR"] = str(self.var_dir / "audit-keys")
        return {**env, **self.tls.client_env()}

    def rest_url(self) -> str:
        """The order service's partner REST facade (https: it serves the stack's TLS)."""
        return f"https://{self.rest_address}"

    def failed(self) -> ServiceProcess | None:
        return next((s for s in self.services.values() if s.proc.poll() is not None), None)


def dev_signing_key(var_dir: Path) -> tuple[Path, Path]:
    """The development signing key under ``var_dir`` (made on the first start, kept so the
    demo tokens survive a restart) and its public key set: (key file, key set file)."""
    key_file, keys_file = var_dir / "token-signing-key.json", var_dir / "token-keys.json"
    if not key_file.exists():
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(SigningKey.generate(f"dev-{int(time.time())}", dev=True).to_json())
    keys_file.write_text(SigningKey.from_json(key_file.read_text()).key_set().to_json())
    return key_file, keys_file


def service_env(stack: Devstack, options: StackOptions, tls: DevstackTls) -> dict[str, str]:
    var_dir = options.var_dir
    key_file, keys_file = dev_signing_key(var_dir)
    env = {
        # Development keys, made here: the services refuse them without dev mode.
        DEV_MODE_VAR: "true",
        KEYS_VAR: str(keys_file),
        SIGNING_KEY_VAR: str(key_file),
        **tls.server_env(),
        "IDC_KAFKA_BOOTSTRAP": stack.broker.bootstrap,
        "IDC_VAR_DIR": str(var_dir),
        "IDC_DEVSTACK_FILE": str(var_dir / "devstack.json"),
        "IDC_LOG_FORMAT": os.environ.get("IDC_LOG_FORMAT", "text"),
        # One machine, one broker: short group timings make consumers start in seconds.
        "IDC_KAFKA_SESSION_TIMEOUT_MS": os.environ.get("IDC_KAFKA_SESSION_TIMEOUT_MS", "6000"),
        "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": os.environ.get(
            "IDC_KAFKA_HEARTBEAT_INTERVAL_MS", "1000"
        ),
        "IDC_METER_INTERVAL_S": str(options.meter_interval_s),
        "IDC_METER_ROUTERS_FILE": str(var_dir / "meter-routers.toml"),
        # The order service's partner REST facade: its default port for `make run`, a free
        # one for stacks of their own (demo, tests).
        "IDC_ORDER_REST_ADDRESS": "127.0.0.1:8090" if options.fixed_ports
        else f"127.0.0.1:{free_port()}",
        # One machine for development: generated development keys (audit keys under var/).
        "IDC_DEV_MODE": os.environ.get("IDC_DEV_MODE", "true"),
    }
    if options.fast:
        env.update(
            {
                "IDC_KAFKA_SESSION_TIMEOUT_MS": "2000",
                "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
                # Tansu answers a waiting fetch as soon as a record arrives (re-measured
                # 2026-12-03: ~6 ms p50 at 20, 500 and 2000 ms), so a long wait costs no
                # latency, while 20 ms kept every idle consumer and the broker busy.
                "IDC_KAFKA_FETCH_MAX_WAIT_MS": "500",
                # No relay poll override: a relay wakes on its own process's commits of
                # outbox rows; its poll (the 0.2 s default) is only the fallback.
                "IDC_GRACE_PERIOD_S": "2",
            }
        )
    return {**env, **options.env}


def metered_interfaces() -> dict[str, list[str]]:
    """Per edge router, ``<interface>.<vlan>`` for the first VLANs of every port."""
    catalogue = tomllib.loads(CATALOGUE.read_text())
    names: dict[str, list[str]] = {}
    for site in catalogue["sites"]:
        for port in site["ports"]:
            first = int(port["vlan_first"])
            vlans = range(first, first + METERED_VLANS_PER_PORT)
            names.setdefault(site["router"], []).extend(
                f"{port['name']}.{vlan}" for vlan in vlans
            )
    return names


def start_meter_source(
    var_dir: Path, exits: contextlib.ExitStack
) -> tuple[CounterAgent | None, str]:
    """The counter agent standing in for both edge routers' interface statistics (both ends
    of every circuit are metered), and the meter's router file pointing at it. Needs root;
    without it the meter sees no router (a note says so) and usage stays empty."""
    routers_file = var_dir / "meter-routers.toml"
    if os.geteuid() != 0:
        routers_file.write_text("")
        return None, "meter: not root, so no counter agent; usage will stay empty"
    agent = exits.enter_context(
        start_counter_agent(var_dir / "devstack" / "counters", metered_interfaces())
    )
    routers = agent.router_names()
    routers_file.write_text(dump_routers([agent.router_access(name) for name in routers]))
    first = agent.ports[min(agent.ports)]
    return agent, (
        f"meter: reads {' and '.join(routers)}'s counters from a counter agent; "
        f"sub-interfaces such as {first.interface_name} and the next "
        f"{METERED_VLANS_PER_PORT - 1} VLANs of every port are veths (send frames into the "
        "customer end to move usage)"
    )


def ports(entry: ServiceEntry, options: StackOptions) -> tuple[str, str]:
    """The API and metrics addresses of one process: the table's ports, or free ones."""
    if options.fixed_ports:
        return f"127.0.0.1:{entry.default_port}", f"127.0.0.1:{entry.metrics_port}"
    return f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"


@contextlib.contextmanager
def start_everything(options: StackOptions) -> Iterator[RunningStack]:
    """Broker, routers, counter agent, order/provisioning/billing, the meter and the
    operations console."""
    var_dir = options.var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    options = StackOptions(**{**options.__dict__, "var_dir": var_dir})
    with contextlib.ExitStack() as exits:
        devstack = exits.enter_context(start_devstack(var_dir / "devstack"))
        devstack.write_description(var_dir / "devstack.json")
        kafka = KafkaSettings.from_env()
        ensure_topics(
            devstack.broker.bootstrap, ALL_TOPICS, kafka.topic_partitions,
            kafka.replication_factor, security=kafka.security,
            configs=revocation_topic_configs(TokenSettings.max_ttl_s),
        )
        tls = ensure_devstack_tls(var_dir)
        env = service_env(devstack, options, tls)
        agent, meter_note = start_meter_source(var_dir, exits)
        services: dict[str, ServiceProcess] = {}
        # Every service started is stopped at once at the end (the console among them).
        exits.callback(lambda: terminate_all(services.values()))
        for entry in (*API_SERVICES, METER):
            port, metrics = ports(entry, options)
            name = entry.module.removeprefix("services.")
            log_path = var_dir / "log" / f"{entry.name}.log"
            services[name] = start_service(name, port, env, log_path, metrics)
        for service in services.values():
            wait_serving(service)
        tokens = ensure_demo_tokens(var_dir / "demo-tokens.json", Path(env[SIGNING_KEY_VAR]),
                                    services["order"].address,
                                    {**os.environ, **tls.client_env()})
        # The console has no gRPC health: it starts once its backends serve, and is up
        # when its HTTP port answers.
        console = start_service(
            CONSOLE.name,
            ports(CONSOLE, options)[0],
            {
                **env,
                "IDC_ORDER_ADDRESS": services["order"].address,
                "IDC_PROVISIONING_ADDRESS": services["provisioning"].address,
            },
            var_dir / "log" / "console.log",
            ports(CONSOLE, options)[1],
        )
        services[CONSOLE.name] = console
        console_host, console_port = console.address.rsplit(":", 1)
        wait_for_port(
            console_host,
            int(console_port),
            60.0,
            name=CONSOLE.name,
            proc=console.proc,
            log_path=console.log_path,
        )
        stack = RunningStack(devstack, services, tokens, var_dir, tls, agent, [meter_note],
                             rest_address=env["IDC_ORDER_REST_ADDRESS"])
        yield stack


def reapply_active_circuits(stack: RunningStack, timeout_s: float = 60.0) -> list[str]:
    """Put the ACTIVE circuits of the last run back on the (fresh, empty) routers.

    Provisioning's CheckSync lists what each router lacks or holds differently; for each
    such circuit a repair is requested (as the Singapore ops; Redeploy creates the circuit
    where a router lacks it and replaces it where it differs) and approved by the demo's
    other operators for their own routers (four eyes: Chongqing's ops and a second
    Singapore operator), then CheckSync is asked again until they are all in sync or
    ``timeout_s`` passes. Returns notes for the banner.
    """
    apis = {
        name: Api(
            Connection.resolve(
                {"provisioning": stack.address("provisioning")}, stack.tokens[name].token, 10.0,
                stack.tls.client_env(),
            )
        )
        for name in ("ops-sg", "ops-cq", "ops-sg-2")
    }
    try:
        return _reapply(apis, time.monotonic() + timeout_s)
    except grpc.RpcError as error:
        return [f"could not re-apply the ACTIVE circuits: {error.details()}"]
    finally:
        for api in apis.values():
            api.close()


def _out_of_sync(api: Api, deadline: float) -> tuple[set[str], list[str]]:
    """Circuits some router lacks or holds differently, and the routers that do not answer
    (asked again until they answer or the deadline passes)."""
    while True:
        sync = api.call("provisioning", api.provisioning.CheckSync, prov_pb.CheckSyncRequest())
        unreadable = [d.device_name for d in sync.devices if d.error.message]
        if not unreadable or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    circuits = {c for d in sync.devices for c in d.missing_circuit_ids}
    circuits |= {drift.circuit_id for d in sync.devices for drift in d.different}
    return circuits, unreadable


def _repair(apis: dict[str, Api], circuit_id: str) -> None:
    """Request a repair as ops-sg; each telco's other operator approves its own router."""
    repair = apis["ops-sg"].call(
        "provisioning", apis["ops-sg"].provisioning.Redeploy,
        prov_pb.RedeployRequest(circuit_id=circuit_id),
    ).repair
    for name, telco in (("ops-cq", "cq"), ("ops-sg-2", "sg")):
        own = next(p for p in repair.payloads if p.telco_id == telco)
        apis[name].call(
            "provisioning", apis[name].provisioning.ApproveRepair,
            prov_pb.ApproveRepairRequest(repair_id=repair.repair_id, payload_sha256=own.sha256,
                                         comment="make run: re-apply to fresh routers"),
        )


def _reapply(apis: dict[str, Api], deadline: float) -> list[str]:
    api = apis["ops-sg"]
    pending, unreadable = _out_of_sync(api, deadline)
    notes = [f"cannot compare {name} with the ACTIVE circuits: it does not answer"
             for name in unreadable]
    if not pending:
        return [*notes, "re-applied 0 ACTIVE circuits: none is missing or different on the routers"]
    redeployed = set()
    for circuit_id in sorted(pending):
        try:
            _repair(apis, circuit_id)
        except grpc.RpcError as error:
            notes.append(f"could not redeploy {circuit_id}: {error.details()}")
            continue
        redeployed.add(circuit_id)
    pending &= redeployed
    while pending and time.monotonic() < deadline:
        time.sleep(0.5)
        pending = _out_of_sync(api, deadline)[0] & redeployed
    notes.append(
        f"re-applied {len(redeployed) - len(pending)} of {len(redeployed)} ACTIVE circuit(s) "
        "from the last run to the routers (which start empty) through approved repairs"
    )
    if pending:
        notes.append(
            "  not back in sync yet (see `idcctl ops check-sync`): " + ", ".join(sorted(pending))
        )
    return notes


def banner(stack: RunningStack) -> str:
    lines = ["", "IDC bandwidth orchestrator is running", ""]
    for name, service in stack.services.items():
        scheme = "http" if name == CONSOLE.name else "grpc"
        lines.append(f"  {name:<13} {scheme}://{service.address}   log {service.log_path}")
        if service.metrics_address is not None:
            lines.append(f"  {'':<13} metrics {service.metrics_url}")
    lines.append(f"  {'partner-rest':<13} {stack.rest_url()}/openapi.json   "
                 "(order service, Sonata-style REST)")
    lines.append(f"  {'kafka':<13} {stack.devstack.broker.bootstrap}")
    for router in stack.devstack.routers:
        lines.append(
            f"  {router.name:<13} netconf over ssh {router.host}:{router.port} "
            f"({router.telco}, {router.platform}{', sandbox' if router.sandbox else ''})"
        )
    lines += ["", "Demo tokens (issued by the order service's token issuer; also in "
              f"{stack.var_dir / 'demo-tokens.json'}):"]
    lines += [f"  {line}" for line in describe(stack.tokens.values())]
    customer, ops, billing = (stack.tokens[n].token for n in ("customer", "ops-sg", "billing"))
    lines += [
        "",
        "Try (idcctl is installed in .venv/bin; the services serve TLS with a local CA):",
        f"  export IDC_TLS_CA_FILE={stack.tls.ca_file}",
        f"  IDC_TOKEN={customer} .venv/bin/idcctl customer sites",
        f"  IDC_TOKEN={ops} .venv/bin/idcctl ops devices",
        f"  IDC_TOKEN={billing} .venv/bin/idcctl billing invoices",
        "",
        *[f"  {note}" for note in stack.notes],
        f"  peers and keys: {stack.var_dir / 'devstack.json'}",
        "  each server offers reflection: grpcurl -cacert "
        f"{stack.tls.ca_file} {stack.address('order')} list",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    var_dir = Path(os.environ.get("IDC_VAR_DIR", REPO_ROOT / "var")).resolve()
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        with start_everything(StackOptions(var_dir=var_dir)) as stack:
            stack.notes += reapply_active_circuits(stack)
            print(banner(stack), flush=True)
            while not stop_requested.wait(1.0):
                failed = stack.failed()
                if failed is not None:
                    log.error("%s exited; see %s", failed.name, failed.log_path)
                    return 1
            return 0
    except DevstackError as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 1
    finally:
        log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
