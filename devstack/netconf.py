"""NETCONF edge routers for the devstack: yuma123 ``netconfd`` behind one OpenSSH ``sshd``.

Each router is one ``netconfd`` (its own HOME, UNIX socket and log) loaded with the YANG
modules of its platform (a folder of ``netconf_templates/`` with a ``platform.toml``
manifest). One ``sshd`` on 127.0.0.1 serves them all, one port per router; its ``netconf``
subsystem maps each port to the socket of that router's agent. Clients authenticate with
an ed25519 key generated in the work directory, and verify the server with a per-router
``known_hosts`` file that is written from the generated host key.

Public API::

    RouterSpec(name, platform, telco)
    start_routers(specs, workdir, *, templates_root=None, timeout=30.0) -> RouterFleet
    RouterFleet: .routers, [name], iter, len, .timings, .close(), context manager
                 faults for tests: .pause(name) .resume(name) .paused(name)
                 .restart(name) .kill_sessions(name, client_port=None)
    Router: .name .telco .platform .host .port .username .key_path .known_hosts_path
            .log_path .connect(*, known_hosts_path=None, timeout=30.0) -> ncclient Manager
    Platform.load(name, templates_root=None) -> Platform   (the manifest)

Every process is started with :func:`devstack.process.spawn`, so it dies
with the process that started it, and :meth:`RouterFleet.close` stops them all.

Faults a test can inflict on one router (measured with yuma123 netconfd 2.13):

* ``pause``/``resume``: SIGSTOP/SIGCONT its netconfd. sshd still accepts connections, so
  an RPC sent meanwhile is queued on the agent's socket and gets no answer; a new session
  gets no ``<hello>`` (ncclient: "Capability exchange timed out"). On resume netconfd
  handles what was queued, even for a session its client has dropped since: a confirmed
  commit with persist sent while paused lands then and stays pending.
* ``kill_sessions``: SIGKILL the sshd processes (and the netconf-subsystem) serving the
  SSH sessions to that router: the client's session ends at once, and netconfd drops the
  session as if its client had vanished.
* ``restart``: stop its netconfd and start it again on the same socket and port. Started
  with ``--no-startup``, it comes back with an empty running configuration and no pending
  confirmed commit; sessions open at the restart are ended (sshd closes them when their
  netconf-subsystem loses the socket).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.packages import ensure_debian_packages
from devstack.process import (
    DevstackError,
    Peer,
    free_port,
    log_tail,
    spawn,
    stop,
    wait_for_port,
)
from sandbox.routers import SSHD_OPTIONS
from services.provisioning.rendering import TEMPLATES_ROOT

if TYPE_CHECKING:
    from ncclient.manager import Manager

__all__ = [
    "DEFAULT_TEMPLATES_ROOT",
    "NETCONF_PACKAGES",
    "Platform",
    "Router",
    "RouterFleet",
    "RouterSpec",
    "start_routers",
]

#: The platforms provisioning renders for, so the routers load the same YANG modules.
DEFAULT_TEMPLATES_ROOT = TEMPLATES_ROOT

#: Debian package -> a file it installs (see ``ensure_debian_packages``).
NETCONF_PACKAGES: dict[str, str] = {
    "netconfd": "/usr/sbin/netconfd",
    "openssh-server": "/usr/sbin/sshd",
    "openssh-client": "/usr/bin/ssh-keygen",
}

_NETCONFD = "/usr/sbin/netconfd"
_NETCONF_SUBSYSTEM = "/usr/sbin/netconf-subsystem"
_SSHD = "/usr/sbin/sshd"
_SSH_KEYGEN = "/usr/bin/ssh-keygen"
_YUMA_MODULES = "/usr/share/yuma/modules"
_HOST = "127.0.0.1"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class RouterSpec:
    """What router to start: a unique ``name``, a ``platform`` folder, the ``telco``;
    ``sandbox``: a simulated router for sandbox circuits only (README "Sandbox")."""

    name: str
    platform: str
    telco: str
    sandbox: bool = False


@dataclass(frozen=True)
class Platform:
    """A router platform: the parsed ``platform.toml`` of a ``netconf_templates/`` folder.

    Manifest keys: ``name``, ``description``, ``yang_dir`` (relative folder of .yang files),
    ``modules`` (names to load, in order), ``templates_dir`` (relative folder of Jinja2
    templates, optional) and ``[templates]`` (a table per template, free-form for now).
    """

    name: str
    description: str
    directory: Path
    yang_dir: Path
    modules: tuple[str, ...]
    templates_dir: Path | None
    templates: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, templates_root: Path | None = None) -> Platform:
        """Read ``<templates_root>/<name>/platform.toml``; raise DevstackError if invalid."""
        root = templates_root or DEFAULT_TEMPLATES_ROOT
        directory = root / name
        manifest = directory / "platform.toml"
        try:
            with manifest.open("rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DevstackError(f"router platform {name!r}: cannot read {manifest}: {exc}") from exc
        modules = data.get("modules")
        if (
            not isinstance(modules, list)
            or not modules
            or not all(isinstance(m, str) and m for m in modules)
        ):
            raise DevstackError(f"{manifest}: 'modules' must be a non-empty list of names")
        yang_dir = directory / str(data.get("yang_dir", "yang"))
        if not yang_dir.is_dir():
            raise DevstackError(f"{manifest}: yang_dir {yang_dir} is not a directory")
        templates_dir = data.get("templates_dir")
        templates = data.get("templates", {})
        if not isinstance(templates, dict):
            raise DevstackError(f"{manifest}: [templates] must be a table")
        return cls(
            name=str(data.get("name", name)),
            description=str(data.get("description", "")),
            directory=directory,
            yang_dir=yang_dir,
            modules=tuple(modules),
            templates_dir=directory / str(templates_dir) if templates_dir else None,
            templates=templates,
        )

    def module_args(self) -> list[str]:
        """netconfd ``--module`` values: the file in yang_dir if present, else the name."""
        args = []
        for module in self.modules:
            path = self.yang_dir / f"{module}.yang"
            args.append(str(path) if path.is_file() else module)
        return args

    def modpath(self) -> str:
        """netconfd ``--modpath``: the platform's yang_dir first, then yuma's modules."""
        return f"{self.yang_dir}:{_YUMA_MODULES}"


@dataclass(frozen=True)
class Router:
    """One running edge router and how to reach it."""

    name: str
    telco: str
    platform: str
    host: str
    port: int
    username: str
    key_path: Path
    known_hosts_path: Path
    log_path: Path
    socket_path: Path
    sandbox: bool = False

    def connect(self, *, known_hosts_path: Path | None = None, timeout: float = 30.0) -> Manager:
        """Open an ncclient session to this router, verifying its host key.

        The host key must be in ``known_hosts_path`` (default: this router's own file) as
        ``[host]:port``; an unknown or changed key raises ncclient's
        ``SSHUnknownHostError``. Returns an ``ncclient.manager.Manager`` (close it, or use
        it as a context manager). Opened by :func:`services.common.netconf.open_session`
        (1 ms ncclient TICK; first exchange settled, see there).
        """
        from services.common.netconf import open_session

        try:
            return open_session(
                host=self.host,
                port=self.port,
                username=self.username,
                key_path=self.key_path,
                known_hosts_path=known_hosts_path or self.known_hosts_path,
                timeout_s=timeout,
            )
        except ValueError as exc:
            raise DevstackError(str(exc)) from exc


class RouterFleet(Peer):
    """The routers started by :func:`start_routers`, and the processes behind them.

    Index by name (``fleet["sg-edge-1"]``), iterate, or use ``.routers``. ``timings`` holds
    the seconds each start step took (``netconfd:<name>``, ``sshd``, ``total``).
    ``close()`` (or leaving the ``with`` block) stops every process; it is idempotent.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.routers: tuple[Router, ...] = ()
        self.timings: dict[str, float] = {}
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        # How each router's netconfd was started, to start it again (restart).
        self._agents: dict[str, _AgentCommand] = {}

    def __getitem__(self, name: str) -> Router:
        for router in self.routers:
            if router.name == name:
                return router
        raise KeyError(name)

    def __iter__(self) -> Iterator[Router]:
        return iter(self.routers)

    def __len__(self) -> int:
        return len(self.routers)

    def by_telco(self, telco: str) -> list[Router]:
        """The routers of one telco."""
        return [r for r in self.routers if r.telco == telco]

    def check_alive(self) -> None:
        """Raise DevstackError if any of the fleet's processes has exited."""
        for what, proc in self._procs:
            if proc.poll() is not None:
                raise DevstackError(f"{what} exited with status {proc.returncode}")

    # -- faults, for tests ----------------------------------------------------------------

    def _netconfd(self, name: str) -> subprocess.Popen[bytes]:
        what = f"netconfd {self[name].name}"
        for label, proc in self._procs:
            if label == what:
                return proc
        raise DevstackError(f"{what} is not running")

    def _sshd(self) -> subprocess.Popen[bytes]:
        for label, proc in self._procs:
            if label == "sshd":
                return proc
        raise DevstackError("the fleet's sshd is not running")

    def pause(self, name: str) -> None:
        """SIGSTOP router ``name``'s netconfd: it answers nothing until :meth:`resume`."""
        os.kill(self._netconfd(name).pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT router ``name``'s netconfd: it handles what was queued meanwhile."""
        os.kill(self._netconfd(name).pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """Router ``name``'s netconfd stopped for the duration of the block."""
        self.pause(name)
        try:
            yield
        finally:
            self.resume(name)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Stop router ``name``'s netconfd and start it again with the same arguments
        (same socket, port and HOME); return once it listens. ``--no-startup``: it comes
        back with an empty running configuration."""
        proc = self._netconfd(name)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGCONT)  # a paused one could not handle SIGTERM
        stop(proc)
        # In its place among the processes: close() stops sshd before the agents.
        self._launch(name, timeout, slot=[p for _, p in self._procs].index(proc))

    def kill_sessions(self, name: str, client_port: int | None = None) -> int:
        """SIGKILL the sshd processes and the netconf-subsystem serving SSH sessions to
        router ``name`` (only the one from local ``client_port`` when given); return how
        many sessions were killed, once their processes are gone."""
        router, listener = self[name], self._sshd().pid
        killed: list[list[int]] = []
        for pid in _pids():
            if "netconf-subsystem" not in _cmdline(pid):
                continue
            connection = _environ(pid).get("SSH_CONNECTION", "").split()
            if len(connection) != 4 or int(connection[3]) != router.port:
                continue
            if client_port is not None and int(connection[1]) != client_port:
                continue
            chain = _ancestors_below(pid, listener)
            if chain is None:  # a session of another fleet's sshd
                continue
            killed.append([pid, *chain])
        for pids in killed:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while any(_alive(pid) for pids in killed for pid in pids):
            if time.monotonic() >= deadline:
                raise DevstackError(f"the sessions to router {name} did not end within 5 s")
            time.sleep(0.01)
        return len(killed)

    def _launch(self, name: str, timeout: float, slot: int | None = None) -> None:
        """Start router ``name``'s netconfd, recorded in ``slot`` of the processes (else
        last), and wait for its socket."""
        agent = self._agents[name]
        with contextlib.suppress(FileNotFoundError):
            agent.socket.unlink()
        proc = spawn(agent.argv, env=agent.env, cwd=agent.cwd, log_path=agent.cwd / "stdout.log")
        if slot is None:
            self._procs.append((f"netconfd {name}", proc))
        else:
            self._procs[slot] = (f"netconfd {name}", proc)
        _wait_for_unix_socket(agent.socket, timeout, f"netconfd for router {name}", proc, agent.log)

    def close(self) -> None:
        """Stop sshd first, then the agents; every process, even if one stop fails."""
        procs, self._procs = self._procs, []
        # netconfd notices SIGTERM only at its next 1 s select() timeout: signal every
        # process first so they shut down in parallel, then stop (and reap) each. SIGCONT
        # first: a paused netconfd would not act on SIGTERM.
        for _, proc in reversed(procs):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGCONT)
                    os.killpg(proc.pid, signal.SIGTERM)
        errors: list[BaseException] = []
        for _, proc in reversed(procs):
            try:
                stop(proc)
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise DevstackError(f"could not stop every router process: {errors}")


@dataclass(frozen=True)
class _AgentCommand:
    """How one router's netconfd is started."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    socket: Path
    log: Path


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _read_proc(pid: int, what: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def _cmdline(pid: int) -> str:
    return _read_proc(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace")


def _environ(pid: int) -> dict[str, str]:
    pairs = (item.partition(b"=") for item in _read_proc(pid, "environ").split(b"\0"))
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs if k}


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, None once it is gone."""
    # The command name, in parentheses, may itself hold spaces and parentheses.
    fields = _read_proc(pid, "stat").rpartition(b")")[2].split()
    return (fields[0].decode(), int(fields[1])) if len(fields) > 1 else None


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _ancestors_below(pid: int, top: int) -> list[int] | None:
    """The ancestors of ``pid`` up to (without) ``top``; None if ``top`` is not one."""
    chain: list[int] = []
    stat = _stat(pid)
    while stat is not None and stat[1] > 1:
        if stat[1] == top:
            return chain
        chain.append(stat[1])
        stat = _stat(stat[1])
    return None


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:  # no passwd entry
        raise DevstackError(f"cannot determine the user name: {exc}") from exc


def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        return
    done = subprocess.run(
        [_SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise DevstackError(
            f"ssh-keygen for {path} failed: {done.stderr.decode(errors='replace').strip()}"
        )


def _wait_for_unix_socket(
    path: Path, timeout: float, what: str, proc: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if proc.poll() is not None:
            raise DevstackError(
                f"{what} exited with status {proc.returncode} at start; "
                f"log tail:\n{log_tail(log_path)}"
            )
        # netconfd creates its socket once its modules are loaded and listens right after;
        # no probe connection (each would show up as a session in the router's log).
        if path.is_socket():
            return
        if time.monotonic() >= deadline:
            raise DevstackError(
                f"{what} did not open {path} within {timeout:.1f} s; "
                f"log tail:\n{log_tail(log_path)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _sshd_config(
    workdir: Path,
    host_key: Path,
    client_pub: Path,
    username: str,
    routers: Sequence[tuple[int, Path]],
) -> str:
    mapping = " ".join(f"--ncxserver-sockname={port}@{sock}" for port, sock in routers)
    lines = [
        "# Generated by devstack/netconf.py",
        f"ListenAddress {_HOST}",
        *(f"Port {port}" for port, _ in routers),
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {client_pub}",
        f"AllowUsers {username}",
        "PermitRootLogin prohibit-password",
        *SSHD_OPTIONS,
        f'Subsystem netconf "{_NETCONF_SUBSYSTEM} {mapping}"',
        "",
    ]
    return "\n".join(lines)


def _validate_specs(specs: Sequence[RouterSpec]) -> None:
    if not specs:
        raise DevstackError("start_routers needs at least one RouterSpec")
    seen: set[str] = set()
    for spec in specs:
        if not _NAME_RE.match(spec.name):
            raise DevstackError(f"router name {spec.name!r} is not usable as a folder name")
        if spec.name in seen:
            raise DevstackError(f"router name {spec.name!r} is used twice")
        seen.add(spec.name)


def _start_agent(
    fleet: RouterFleet,
    spec: RouterSpec,
    platform: Platform,
    port: int,
    username: str,
    timeout: float,
) -> tuple[Path, Path]:
    """Start one router's netconfd; return its socket and log paths once it is up."""
    rdir = fleet.workdir / spec.name
    rdir.mkdir(exist_ok=True)
    sock = rdir / "netconfd.sock"
    log = rdir / "netconfd.log"
    argv = (
        _NETCONFD,
        f"--modpath={platform.modpath()}",
        *(f"--module={m}" for m in platform.module_args()),
        f"--ncxserver-sockname={sock}",
        f"--port={port}",
        "--no-startup",
        f"--superuser={username}",
        f"--log={log}",
    )
    # Each agent keeps state under $HOME/.yuma: two agents must not share a HOME.
    env = {**os.environ, "HOME": str(rdir)}
    fleet._agents[spec.name] = _AgentCommand(argv, env, rdir, sock, log)
    fleet._launch(spec.name, timeout)
    return sock, log


def _start_sshd(
    fleet: RouterFleet,
    host_key: Path,
    client_pub: Path,
    username: str,
    routers: Sequence[Router],
    timeout: float,
) -> None:
    """Start the one sshd in front of every router's agent and wait for all its ports."""
    work = fleet.workdir
    config = work / "sshd_config"
    config.write_text(
        _sshd_config(
            work, host_key, client_pub, username, [(r.port, r.socket_path) for r in routers]
        )
    )
    # sshd refuses to start without its privilege separation directory.
    with contextlib.suppress(OSError):
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    sshd_log = work / "sshd.log"
    sshd = spawn(
        [_SSHD, "-D", "-f", str(config), "-E", str(sshd_log)],
        cwd=work,
        log_path=work / "sshd.stdout.log",
    )
    fleet._procs.append(("sshd", sshd))
    for router in routers:
        wait_for_port(_HOST, router.port, timeout, name="sshd", proc=sshd, log_path=sshd_log)


def start_routers(
    specs: Iterable[RouterSpec],
    workdir: str | os.PathLike[str],
    *,
    templates_root: Path | None = None,
    timeout: float = 30.0,
) -> RouterFleet:
    """Start one netconfd per spec and one sshd in front of them; return the fleet.

    ``workdir`` receives the keys, the sshd config and log, and one folder per router
    (its HOME, socket and ``netconfd.log``). Installs the Debian packages if missing (as
    root; see :func:`ensure_debian_packages`). Ports are free ports of 127.0.0.1 picked
    now. On any failure everything already started is stopped and DevstackError raised.
    Use the result as a context manager, or call ``close()``.
    """
    spec_list = list(specs)
    _validate_specs(spec_list)
    platforms = {s.platform: Platform.load(s.platform, templates_root) for s in spec_list}
    ensure_debian_packages(NETCONF_PACKAGES)

    t_start = time.monotonic()
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    username = _current_user()
    host_key = work / "ssh_host_ed25519_key"
    client_key = work / "client_ed25519"
    _keygen(host_key, "idc-devstack-host")
    _keygen(client_key, "idc-devstack-client")
    host_pub = host_key.with_name(host_key.name + ".pub").read_text().split()
    if len(host_pub) < 2:
        raise DevstackError(f"unexpected host public key in {host_key}.pub")
    client_pub = client_key.with_name(client_key.name + ".pub")

    fleet = RouterFleet(work)
    try:
        routers: list[Router] = []
        used_ports: set[int] = set()
        for spec in spec_list:
            t0 = time.monotonic()
            port = free_port(_HOST)
            while port in used_ports:
                port = free_port(_HOST)
            used_ports.add(port)
            sock, log = _start_agent(fleet, spec, platforms[spec.platform], port, username, timeout)
            known_hosts = work / spec.name / "known_hosts"
            known_hosts.write_text(f"[{_HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
            routers.append(
                Router(
                    name=spec.name,
                    telco=spec.telco,
                    platform=spec.platform,
                    host=_HOST,
                    port=port,
                    username=username,
                    key_path=client_key,
                    known_hosts_path=known_hosts,
                    log_path=log,
                    socket_path=sock,
                    sandbox=spec.sandbox,
                )
            )
            fleet.timings[f"netconfd:{spec.name}"] = time.monotonic() - t0

        t0 = time.monotonic()
        _start_sshd(fleet, host_key, client_pub, username, routers, timeout)
        fleet.timings["sshd"] = time.monotonic() - t0
        fleet.routers = tuple(routers)
        fleet.timings["total"] = time.monotonic() - t_start
    except BaseException:
        fleet.close()
        raise
    return fleet
