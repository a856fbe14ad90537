"""The sandbox routers' image entry point (sandbox/routers.py), run from the image's layout.

No container engine runs here, so the files the Dockerfile copies are laid out under a
temporary root the way its COPY lines put them, with the image's ENV and the manifests'
router list and Secret mounts (a host key and the agent's public key), and the entry point
runs with this machine's Debian netconfd and sshd, as in the image. The agent's own NETCONF
client then reads the routers, verifying the mounted host key.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from devstack.process import free_port
from services.common.netconf import open_session

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "sandbox" / "Dockerfile"
MANIFESTS = [REPO / "k8s/base/sandbox-sg/sandbox-router-sg.yaml",
             REPO / "k8s/base/sandbox-cq/sandbox-router-cq.yaml"]  # fmt: skip
# A module each platform's router must announce in its hello (its YANG was loaded).
PLATFORM_MODULE = {"openconfig": "openconfig-interfaces", "cq-vendor": "idc-cq-ifm"}
START_BOUND_S = 30.0
# The image runs Debian's python3 (standard library only): so does the test, where it exists.
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable


def _dockerfile_instructions(keyword: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(keyword)]


def _image_env(root: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _dockerfile_instructions("ENV "):
        env.update(pair.split("=", 1) for pair in args.split())
    return {k: str(root / v.lstrip("/")) if v.startswith("/") else v for k, v in env.items()}


def _lay_out_image(root: Path) -> Path:
    """The COPY lines of the Dockerfile, applied under ``root``; returns the entry point."""
    for args in _dockerfile_instructions("COPY "):
        source, dest = args.split()
        target = root / dest.lstrip("/")
        if dest.endswith("/"):  # into that folder
            target /= Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target)
        else:
            shutil.copy(REPO / source, target)
    (cmd,) = _dockerfile_instructions("CMD ")
    return root / yaml.safe_load(cmd)[1].lstrip("/")


def _manifest_routers() -> list[tuple[str, str]]:
    """(name, platform) of every router the manifests start, from their SANDBOX_ROUTERS."""
    found = []
    for path in MANIFESTS:
        deployment = next(
            d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Deployment"
        )
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        value = next(e["value"] for e in container["env"] if e["name"] == "SANDBOX_ROUTERS")
        found += [tuple(item.split(":")[0].split("=")) for item in value.split(",")]
    return found  # type: ignore[return-value]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip


@dataclass
class Running:
    entry: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    platforms: dict[str, str]
    agent_key: Path
    host_pub: str

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, str(self.entry), "check"], env=self.env,
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Running]:
    root = tmp_path / "image"
    entry = _lay_out_image(root)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    _keygen(secrets / "ssh_host_ed25519_key")
    _keygen(tmp_path / "agent")
    shutil.copy(tmp_path / "agent.pub", secrets / "authorized_keys")
    routers = _manifest_routers()
    ports = {name: free_port() for name, _ in routers}
    env = {
        **os.environ,
        **_image_env(root),
        "SANDBOX_ROUTERS": ",".join(f"{n}={p}:{ports[n]}" for n, p in routers),
        "SANDBOX_LISTEN": "127.0.0.1",
        "SANDBOX_HOST_KEY_FILE": str(secrets / "ssh_host_ed25519_key"),
        "SANDBOX_AUTHORIZED_KEYS_FILE": str(secrets / "authorized_keys"),
    }
    # The image's /run/sandbox, short: the sockets' paths must fit a UNIX socket address.
    run_dir = Path(tempfile.mkdtemp(prefix="sbx-", dir="/tmp"))
    env["SANDBOX_RUN_DIR"] = env["HOME"] = str(run_dir)
    proc = subprocess.Popen([PYTHON, str(entry), "serve"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    running = Running(entry, env, proc, ports, dict(routers), tmp_path / "agent",
                      (secrets / "ssh_host_ed25519_key.pub").read_text())  # fmt: skip
    try:
        _wait_for_ready(proc)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait_for_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    deadline, seen = time.monotonic() + START_BOUND_S, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if line.strip() == "sandbox: ready":
            return
        if not line and proc.poll() is not None:
            break
    pytest.fail(f"the sandbox routers did not start within {START_BOUND_S} s: {''.join(seen)}")


def test_the_entry_point_serves_every_router_of_the_manifests_from_the_image_layout(
    sandbox: Running, tmp_path: Path
) -> None:
    assert sandbox.check().returncode == 0
    kind, key = sandbox.host_pub.split()[:2]
    for name, port in sandbox.ports.items():
        # As the provisioning agent connects: its key, the mounted host key in known_hosts.
        known_hosts = tmp_path / f"known_hosts-{name}"
        known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")
        with open_session(
            host="127.0.0.1",
            port=port,
            username=getpass.getuser(),
            timeout_s=10,
            key_path=sandbox.agent_key,
            known_hosts_path=known_hosts,
        ) as session:
            capabilities = " ".join(session.server_capabilities)
            assert PLATFORM_MODULE[sandbox.platforms[name]] in capabilities, name
            assert "<data" in session.get_config(source="running").xml


def test_a_stop_ends_every_router_and_the_health_check_then_fails(sandbox: Running) -> None:
    sandbox.proc.send_signal(signal.SIGTERM)
    assert sandbox.proc.wait(timeout=15) == 0
    failed = sandbox.check()
    assert failed.returncode == 1
    assert all(name in failed.stderr for name in sandbox.ports)


def test_a_router_process_that_dies_ends_the_unit_for_a_restart(sandbox: Running) -> None:
    # The netconfd children of this test's own `serve` process.
    children = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and _parent(int(pid)) == sandbox.proc.pid and "netconfd" in _cmd(int(pid))
    ]
    assert len(children) == len(sandbox.ports)
    os.kill(children[0], signal.SIGKILL)
    assert sandbox.proc.wait(timeout=15) == 1
    assert sandbox.check().returncode == 1


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
