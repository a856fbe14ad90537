"""A NETCONF agent that serves real, moving interface counters, for the meter.

The devstack's edge routers (``netconf.py``) store configuration only; nothing counts
traffic there. This module starts one more yuma123 ``netconfd`` (behind its own ``sshd``)
loaded with Debian's ``netconfd-module-ietf-interfaces``, whose server instrumentation
serves the kernel's interface counters (``/proc/net/dev``) as
``/interfaces-state/interface/statistics``. Two things make it work here:

* the module runs a helper ``get-interface-ipv4 <ifname>`` for every interface and asserts
  that it exits 0 (its output, if any, is ietf-ip ``<ipv4>`` state XML). Debian does not
  ship it, so netconfd aborts at start; we put one first on the agent's PATH: a link to
  ``true`` (no ipv4 state, which the meter never reads). It runs for every kernel
  interface at every refresh, inside netconfd's single event loop: a shell script with
  ``ip`` and ``awk`` there, times two routers' veths, held the loop long enough on a busy
  machine that SSH sessions timed out in the capability exchange;
* each metered router interface is a Linux veth pair: the *router end* is what the agent
  lists (its in-octets are what the customer sent, its out-octets what the router sent to
  the customer), the *customer end* is where a test injects frames with an ``AF_PACKET``
  socket. IPv6 is switched off on both ends first, so the kernel's own neighbour discovery
  does not move the counters.

The module refreshes its copy of the counters once a second (a periodic 1 s timer in the
agent), so a reading shows the kernel counters as of up to :data:`AGENT_REFRESH_S` ago,
as routers' statistics caches do.

One agent serves several routers (the Singapore and the Chongqing edge router, so the
meter reads both ends of a circuit): each router's ports are their own veths, and
:meth:`CounterAgent.router_access` gives each router name the same agent address with its
own interface mapping. :meth:`CounterAgent.cut_off` and :meth:`CounterAgent.restore` make
the agent unreachable and reachable again (its sshd stopped, sessions dropped), for tests
of meter gaps.

Kernel interface names cannot contain "/" and have at most 15 characters, so a router
interface such as ``xe-0/0/1.100`` gets a short derived name (``ic<8 hex>r`` / ``...c``);
:meth:`CounterAgent.router_access` hands the meter that mapping in its router
configuration (``[routers.NAME.interfaces]``), so production code keeps asking for
``xe-0/0/1.100``. Needs root (veths, raw sockets); dummy and VLAN interfaces are not
available on this kind of machine, which is why veths are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from devstack.netconf import (
    NETCONF_PACKAGES,
    Router,
    _current_user,
    _keygen,
    _sshd_config,
    _wait_for_unix_socket,
)
from devstack.packages import ensure_debian_packages
from devstack.process import DevstackError, free_port, spawn, stop, wait_for_port
from services.billing.meter.source import RouterAccess

__all__ = ["AGENT_REFRESH_S", "CounterAgent", "MeteredPort", "start_counter_agent"]

SIL_PACKAGE = "netconfd-module-ietf-interfaces"
_SIL_GLOB = "/usr/lib/*/yuma/libietf-interfaces.so"
_HOST = "127.0.0.1"
#: How often the agent refreshes the counters it serves.
AGENT_REFRESH_S = 1.0
_ETHERTYPE_EXPERIMENTAL = b"\x88\xb5"  # IEEE 802 local experimental: no stack handles it

def ensure_counter_packages() -> None:
    """Install netconfd, sshd and the ietf-interfaces server module if missing."""
    ensure_debian_packages({**NETCONF_PACKAGES, SIL_PACKAGE: _SIL_GLOB})


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise DevstackError(
            f"ip {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}"
        )


def _kernel_names(seed: str, router_name: str, interface_name: str) -> tuple[str, str]:
    digest = hashlib.sha1(f"{seed}:{router_name}:{interface_name}".encode()).hexdigest()[:8]
    return f"ic{digest}r", f"ic{digest}c"


@dataclass(frozen=True)
class MeteredPort:
    """One router interface backed by a veth pair."""

    router_name: str
    interface_name: str
    router_end: str
    customer_end: str

    def send_from_customer(self, frame_count: int, frame_bytes: int) -> int:
        """Frames into the router (its in-octets); returns the octets the kernel counts."""
        return _send(self.customer_end, self.router_end, frame_count, frame_bytes)

    def send_to_customer(self, frame_count: int, frame_bytes: int) -> int:
        """Frames out of the router (its out-octets); returns the octets counted."""
        return _send(self.router_end, self.customer_end, frame_count, frame_bytes)


def _mac(ifname: str) -> bytes:
    return bytes.fromhex(
        Path(f"/sys/class/net/{ifname}/address").read_text().strip().replace(":", "")
    )


def _send(source: str, destination: str, frame_count: int, frame_bytes: int) -> int:
    """Send Ethernet frames of exactly ``frame_bytes`` (header included, no FCS: what a veth
    counts) from ``source``; returns ``frame_count * frame_bytes``."""
    if not 60 <= frame_bytes <= 1514:
        raise ValueError("frame_bytes must be 60..1514 (an Ethernet frame without FCS)")
    header = _mac(destination) + _mac(source) + _ETHERTYPE_EXPERIMENTAL
    frame = header + bytes(frame_bytes - len(header))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((source, 0))
        for _ in range(frame_count):
            raw.send(frame)
    return frame_count * frame_bytes


class CounterAgent:
    """The running agent (as a :class:`Router`) and its veth-backed ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.router: Router | None = None
        # By (router name, router interface name).
        self.ports: dict[tuple[str, str], MeteredPort] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._sshd_argv: list[str] = []

    def port(self, router_name: str, interface_name: str) -> MeteredPort:
        return self.ports[(router_name, interface_name)]

    def router_names(self) -> list[str]:
        return sorted({router for router, _ in self.ports})

    def cut_off(self) -> None:
        """Make the agent unreachable: stop its sshd and the sessions it serves (each
        session's sshd runs in a session of its own, so the group signal misses it)."""
        sshd = self._procs.pop()
        sessions = _children(sshd.pid)
        stop(sshd)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def restore(self, timeout: float = 30.0) -> None:
        """Reachable again after :meth:`cut_off` (same port, keys and counters)."""
        if self.router is None:
            raise DevstackError("the counter agent is not running")
        self._procs.append(_start_sshd(self._sshd_argv, self.workdir, self.router.port, timeout))

    def router_access(self, router_name: str) -> RouterAccess:
        """How the meter reaches this agent as router ``router_name``, with the mapping of
        that router's interface names to its veths."""
        if self.router is None:
            raise DevstackError("the counter agent is not running")
        return RouterAccess(
            name=router_name,
            host=self.router.host,
            port=self.router.port,
            username=self.router.username,
            key_file=self.router.key_path,
            known_hosts_file=self.router.known_hosts_path,
            interface_names={
                p.interface_name: p.router_end
                for p in self.ports.values()
                if p.router_name == router_name
            },
        )

    def close(self) -> None:
        """Stop sshd and netconfd, delete the veths (a pair goes with either end)."""
        procs, self._procs = self._procs, []
        for proc in reversed(procs):
            stop(proc)
        ports, self.ports = self.ports, {}
        for port in ports.values():
            with contextlib.suppress(DevstackError):
                _ip("link", "del", port.router_end)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _start_sshd(
    argv: Sequence[str], work: Path, port: int, timeout: float
) -> subprocess.Popen[bytes]:
    sshd_log = work / "sshd.log"
    sshd = spawn(argv, cwd=work, log_path=work / "sshd.stdout.log")
    try:
        wait_for_port(
            _HOST, port, timeout, name="sshd (counter agent)", proc=sshd, log_path=sshd_log
        )
    except BaseException:
        stop(sshd)
        raise
    return sshd


def _add_veth(agent: CounterAgent, router_name: str, interface_name: str) -> None:
    router_end, customer_end = _kernel_names(str(agent.workdir), router_name, interface_name)
    with contextlib.suppress(DevstackError):
        _ip("link", "del", router_end)  # left over from a killed run with the same workdir
    _ip("link", "add", router_end, "type", "veth", "peer", "name", customer_end)
    agent.ports[(router_name, interface_name)] = MeteredPort(
        router_name, interface_name, router_end, customer_end
    )
    for end in (router_end, customer_end):
        Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").write_text("1\n")
        _ip("link", "set", end, "up")


def start_counter_agent(
    workdir: str | os.PathLike[str],
    interfaces: Mapping[str, Sequence[str]],
    *,
    timeout: float = 30.0,
) -> CounterAgent:
    """Start the counter-serving agent with one veth-backed port per router name and
    router interface name in ``interfaces`` (e.g. ``{"sg-edge-1": ["xe-0/0/1.100"]}``).
    Needs root."""
    if os.geteuid() != 0:
        raise DevstackError("the counter agent needs root (veth pairs and raw sockets)")
    ensure_counter_packages()
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    agent = CounterAgent(work)
    try:
        for router_name, names in interfaces.items():
            for name in names:
                _add_veth(agent, router_name, name)
        bin_dir = work / "bin"
        bin_dir.mkdir(exist_ok=True)
        helper = bin_dir / "get-interface-ipv4"
        helper.unlink(missing_ok=True)
        helper.symlink_to(shutil.which("true") or "/bin/true")

        username = _current_user()
        host_key = work / "ssh_host_ed25519_key"
        client_key = work / "client_ed25519"
        _keygen(host_key, "idc-counter-agent-host")
        _keygen(client_key, "idc-counter-agent-client")
        port = free_port(_HOST)
        home = work / "agent"
        home.mkdir(exist_ok=True)
        sock = home / "netconfd.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        log = home / "netconfd.log"
        env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        netconfd = spawn(
            [
                "/usr/sbin/netconfd",
                "--module=ietf-interfaces",
                f"--ncxserver-sockname={sock}",
                f"--port={port}",
                "--no-startup",
                f"--superuser={username}",
                f"--log={log}",
            ],
            env=env,
            cwd=home,
            log_path=home / "stdout.log",
        )
        agent._procs.append(netconfd)
        _wait_for_unix_socket(sock, timeout, "netconfd (counter agent)", netconfd, log)

        config = work / "sshd_config"
        config.write_text(
            _sshd_config(
                work,
                host_key,
                client_key.with_name(client_key.name + ".pub"),
                username,
                [(port, sock)],
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        agent._sshd_argv = ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(work / "sshd.log")]
        agent._procs.append(_start_sshd(agent._sshd_argv, work, port, timeout))
        host_pub = host_key.with_name(host_key.name + ".pub").read_text().split()
        known_hosts = work / "known_hosts"
        known_hosts.write_text(f"[{_HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
        agent.router = Router(
            name="counter-agent",
            telco="",
            platform="ietf-interfaces",
            host=_HOST,
            port=port,
            username=username,
            key_path=client_key,
            known_hosts_path=known_hosts,
            log_path=log,
            socket_path=sock,
        )
    except BaseException:
        agent.close()
        raise
    return agent
