"""``make run``: the devstack and every service on one machine, until Ctrl-C.

Data lives under ``var/`` (SQLite files, logs, the devstack's keys), so a second start
reuses it. Every child process is stopped on exit, and dies with us if we are killed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from services.common.config import KafkaSettings
from services.common.devstack.process import DevstackError
from services.common.devstack.services import (
    REPO_ROOT,
    SERVICES,
    ServiceProcess,
    start_service,
    wait_serving,
)
from services.common.devstack.stack import Devstack, start_devstack
from services.common.events.topics import ALL_TOPICS, ensure_topics

log = logging.getLogger("devstack")


def service_env(stack: Devstack, var_dir: Path) -> dict[str, str]:
    return {
        "IDC_KAFKA_BOOTSTRAP": stack.broker.bootstrap,
        "IDC_VAR_DIR": str(var_dir),
        "IDC_DEVSTACK_FILE": str(var_dir / "devstack.json"),
        "IDC_LOG_FORMAT": os.environ.get("IDC_LOG_FORMAT", "text"),
        # One machine, one broker: short group timings make consumers start in seconds.
        "IDC_KAFKA_SESSION_TIMEOUT_MS": os.environ.get("IDC_KAFKA_SESSION_TIMEOUT_MS", "6000"),
        "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": os.environ.get(
            "IDC_KAFKA_HEARTBEAT_INTERVAL_MS", "1000"
        ),
    }


def banner(stack: Devstack, services: list[ServiceProcess], var_dir: Path) -> str:
    lines = ["", "IDC bandwidth orchestrator is running", ""]
    for service in services:
        lines.append(f"  {service.name:<13} grpc://{service.address}   log {service.log_path}")
    lines.append(f"  {'kafka':<13} {stack.broker.bootstrap}")
    for router in stack.routers:
        lines.append(
            f"  {router.name:<13} netconf over ssh {router.host}:{router.port} "
            f"({router.telco}, {router.platform})"
        )
    lines += [
        "",
        f"  peers and keys: {var_dir / 'devstack.json'}",
        "  each server offers reflection: grpcurl -plaintext 127.0.0.1:50051 list",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    var_dir = Path(os.environ.get("IDC_VAR_DIR", REPO_ROOT / "var")).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        with start_devstack(var_dir / "devstack") as stack:
            return run_services(stack, var_dir, stop_requested)
    except DevstackError as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 1
    finally:
        log.info("stopped")


def run_services(stack: Devstack, var_dir: Path, stop_requested: threading.Event) -> int:
    stack.write_description(var_dir / "devstack.json")
    kafka = KafkaSettings.from_env()
    ensure_topics(
        stack.broker.bootstrap, ALL_TOPICS, kafka.topic_partitions, kafka.replication_factor
    )
    env = service_env(stack, var_dir)
    services: list[ServiceProcess] = []
    try:
        for name, port in SERVICES.items():
            log_path = var_dir / "log" / f"{name}.log"
            services.append(start_service(name, f"127.0.0.1:{port}", env, log_path))
        for service in services:
            wait_serving(service)
        print(banner(stack, services, var_dir), flush=True)
        while not stop_requested.wait(1.0):
            for service in services:
                if service.proc.poll() is not None:
                    log.error("%s exited; see %s", service.name, service.log_path)
                    return 1
        return 0
    finally:
        for service in reversed(services):
            service.terminate()


if __name__ == "__main__":
    sys.exit(main())
