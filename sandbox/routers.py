"""The simulated sandbox routers, as one deployable unit (README "Sandbox"; the image is
``sandbox/Dockerfile``, the manifests ``k8s/base/sandbox-sg`` and ``k8s/base/sandbox-cq``).

One yuma123 ``netconfd`` per router, loaded with its platform's YANG modules from
``netconf_templates/`` (the modules provisioning renders against), behind one OpenSSH
``sshd`` listening on a fixed port per router. Runs as any user with a passwd entry: sshd
then lets in that user only, with a key of the authorised keys file.

Standard library only (Debian's python3 runs it). Commands::

    routers.py serve   start the routers, wait until each answers a NETCONF hello, then
                       supervise them: exit 1 when one process exits, 0 on SIGTERM
    routers.py check   exit 0 if every router answers a NETCONF hello over SSH, else 1

Environment (a bad or missing value stops ``serve`` with exit status 2, naming it):

    SANDBOX_ROUTERS           name=platform:port,... e.g. sg-sandbox-edge=openconfig:2830
    SANDBOX_AUTHORIZED_KEYS_FILE   file of the public keys let in (the provisioning agent's)
    SANDBOX_HOST_KEY_FILE          ed25519 host key to serve (optional: generated when absent;
                              mounted in production, so the agents' known_hosts stays valid)
    SANDBOX_RUN_DIR           writable folder for keys, sockets, HOMEs (default /run/sandbox)
    SANDBOX_TEMPLATES         netconf_templates folder (default: beside this file)
    SANDBOX_LISTEN            sshd's address (default 0.0.0.0)
    SANDBOX_START_TIMEOUT_S   bound on the start of every step (default 30)
"""

from __future__ import annotations

import functools
import getpass
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

NETCONFD = "/usr/sbin/netconfd"
NETCONF_SUBSYSTEM = "/usr/sbin/netconf-subsystem"
SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
YUMA_MODULES = "/usr/share/yuma/modules"
HEALTH_TIMEOUT_S = 5.0
#: What an sshd in front of simulated routers allows: key login only, no PAM (it need not
#: run as root), a NETCONF subsystem and nothing else. StrictModes off: the keys may be
#: files of a root-owned volume. Shared with the devstack's routers (devstack/netconf.py).
SSHD_OPTIONS = (
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "StrictModes no",
    "PermitTTY no",
    "X11Forwarding no",
    "AllowTcpForwarding no",
    "AllowAgentForwarding no",
    "PrintMotd no",
    "UseDNS no",
    "LogLevel INFO",
)
_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the final NUL
_EOM = b"]]>]]>"
_BASE_CAPABILITY = b"urn:ietf:params:netconf:base:1.0"
_SPEC_RE = re.compile(r"^([a-z0-9][a-z0-9.-]{0,62})=([a-z0-9-]+):([0-9]{1,5})$")
_CLIENT_HELLO = (
    b'<?xml version="1.0" encoding="UTF-8"?><hello xmlns="urn:ietf:params:xml:ns:netconf:'
    b'base:1.0"><capabilities><capability>urn:ietf:params:netconf:base:1.0</capability>'
    b"</capabilities></hello>" + _EOM
)


class SetupError(Exception):
    """A setting is wrong or a process would not start; the message says which."""


@dataclass(frozen=True)
class RouterConf:
    name: str
    platform: str
    port: int


@dataclass(frozen=True)
class Settings:
    routers: tuple[RouterConf, ...]
    run_dir: Path
    templates: Path
    authorized_keys: Path | None
    host_key: Path | None
    listen: str
    timeout_s: float

    @property
    def health_key(self) -> Path:
        return self.run_dir / "health_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"


def parse_routers(value: str) -> tuple[RouterConf, ...]:
    routers: list[RouterConf] = []
    for item in (part.strip() for part in value.split(",") if part.strip()):
        match = _SPEC_RE.match(item)
        if not match or not 1024 <= int(match[3]) <= 65535:
            raise SetupError(
                f"SANDBOX_ROUTERS: {item!r} is not name=platform:port (a port 1024-65535)"
            )
        routers.append(RouterConf(match[1], match[2], int(match[3])))
    if not routers:
        raise SetupError("SANDBOX_ROUTERS is not set: name=platform:port,...")
    for what in ("name", "port"):
        values = [getattr(r, what) for r in routers]
        if len(set(values)) != len(values):
            raise SetupError(f"SANDBOX_ROUTERS: a router {what} is used twice")
    return tuple(routers)


def load_settings(env: Mapping[str, str], *, serving: bool) -> Settings:
    def optional(name: str) -> Path | None:
        value = env.get(name, "").strip()
        return Path(value) if value else None

    authorized = optional("SANDBOX_AUTHORIZED_KEYS_FILE")
    if serving and (authorized is None or not authorized.is_file()):
        raise SetupError(f"SANDBOX_AUTHORIZED_KEYS_FILE: no file {authorized or '(unset)'}")
    try:
        timeout_s = float(env.get("SANDBOX_START_TIMEOUT_S", "30"))
    except ValueError:
        timeout_s = 0.0
    if not 0 < timeout_s <= 600:
        raise SetupError("SANDBOX_START_TIMEOUT_S must be a number of seconds in (0, 600]")
    return Settings(
        routers=parse_routers(env.get("SANDBOX_ROUTERS", "")),
        run_dir=optional("SANDBOX_RUN_DIR") or Path("/run/sandbox"),
        templates=optional("SANDBOX_TEMPLATES") or Path(__file__).parent / "netconf_templates",
        authorized_keys=authorized,
        host_key=optional("SANDBOX_HOST_KEY_FILE"),
        listen=env.get("SANDBOX_LISTEN", "").strip() or "0.0.0.0",
        timeout_s=timeout_s,
    )


def netconfd_argv(router: RouterConf, templates: Path, rdir: Path, user: str) -> list[str]:
    """netconfd for one router: the platform's modules, in its manifest's order."""
    manifest = templates / router.platform / "platform.toml"
    try:
        data = tomllib.loads(manifest.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SetupError(f"router {router.name}: cannot read {manifest}: {exc}") from exc
    yang = manifest.parent / str(data.get("yang_dir", "yang"))
    modules = data.get("modules")
    if not isinstance(modules, list) or not modules:
        raise SetupError(f"{manifest}: no modules to load")
    # A module's file in yang_dir if there is one, else its name (found on the modpath).
    files = [yang / f"{m}.yang" for m in modules]
    return [
        NETCONFD,
        f"--modpath={yang}:{YUMA_MODULES}",
        *(f"--module={f if f.is_file() else m}" for f, m in zip(files, modules, strict=True)),
        f"--ncxserver-sockname={rdir / 'netconfd.sock'}",
        f"--port={router.port}",
        "--no-startup",
        f"--superuser={user}",
        f"--log={rdir / 'netconfd.log'}",
    ]


def sshd_config(settings: Settings, user: str) -> str:
    mapping = " ".join(
        f"--ncxserver-sockname={r.port}@{settings.run_dir / r.name / 'netconfd.sock'}"
        for r in settings.routers
    )
    run = settings.run_dir
    return "\n".join(
        [
            f"ListenAddress {settings.listen}",
            *(f"Port {r.port}" for r in settings.routers),
            f"HostKey {run / 'ssh_host_ed25519_key'}",
            f"PidFile {run / 'sshd.pid'}",
            f"AuthorizedKeysFile {run / 'authorized_keys'}",
            f"AllowUsers {user}",
            *SSHD_OPTIONS,
            f'Subsystem netconf "{NETCONF_SUBSYSTEM} {mapping}"',
            "",
        ]
    )


def _keygen(path: Path, comment: str) -> None:
    done = subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise SetupError(f"ssh-keygen {path}: {done.stderr.decode(errors='replace').strip()}")


def prepare_keys(settings: Settings) -> None:
    """Host key (copied from the mount, else generated), the health check's own client
    key, the authorised keys (the agents' and the health key) and the health known_hosts."""
    run = settings.run_dir
    host_key = run / "ssh_host_ed25519_key"
    for stale in (host_key, settings.health_key):
        for file in (stale, stale.with_name(stale.name + ".pub")):
            file.unlink(missing_ok=True)
    if settings.host_key is not None and settings.host_key.is_file():
        # sshd refuses a private key others may read; a Secret's file is not ours to chmod.
        shutil.copyfile(settings.host_key, host_key)
        host_key.chmod(0o600)
        public = subprocess.run(
            [SSH_KEYGEN, "-y", "-f", str(host_key)], capture_output=True, check=False, timeout=30
        )
        if public.returncode != 0:
            raise SetupError(f"SANDBOX_HOST_KEY_FILE: {settings.host_key} is not a private key")
        host_key.with_name(host_key.name + ".pub").write_bytes(public.stdout)
    else:
        _keygen(host_key, "idc-sandbox-router")
        print(f"sandbox: host key generated: {host_key.with_suffix('.pub').name}", flush=True)
    _keygen(settings.health_key, "idc-sandbox-health")
    agents = settings.authorized_keys.read_text() if settings.authorized_keys else ""
    health = settings.health_key.with_name(settings.health_key.name + ".pub").read_text()
    (run / "authorized_keys").write_text(agents.rstrip("\n") + "\n" + health)
    kind, key = host_key.with_name(host_key.name + ".pub").read_text().split()[:2]
    print(f"sandbox: host key {kind} {key}", flush=True)
    settings.known_hosts.write_text(
        "".join(f"[127.0.0.1]:{r.port} {kind} {key}\n" for r in settings.routers)
    )


def netconf_hello(settings: Settings, router: RouterConf, timeout_s: float) -> str | None:
    """None if ``router`` answers a NETCONF hello over SSH within ``timeout_s``, else why not."""
    argv = [
        SSH, "-F", "/dev/null", "-i", str(settings.health_key),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={settings.known_hosts}",
        "-o", f"ConnectTimeout={max(1, int(timeout_s))}",
        "-p", str(router.port), "-s", f"{getpass.getuser()}@127.0.0.1", "netconf",
    ]  # fmt: skip
    # Leaving the block closes the pipes and reaps ssh.
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            return _read_hello(proc, router, timeout_s)
        except OSError as exc:
            return f"{router.name}: {exc}"
        finally:
            proc.kill()


def _read_hello(proc: subprocess.Popen[bytes], router: RouterConf, timeout_s: float) -> str | None:
    assert proc.stdout is not None and proc.stdin is not None
    deadline, got = time.monotonic() + timeout_s, b""
    while _EOM not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            return f"{router.name}: no NETCONF hello within {timeout_s:.0f} s"
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:  # ssh gave up: its stderr says why
            try:
                _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.5))
            except subprocess.TimeoutExpired:
                err = b""
            why = err.decode(errors="replace").strip()
            return f"{router.name}: session ended before the hello: {why}"
        got += chunk
    if _BASE_CAPABILITY not in got or b"<session-id>" not in got:
        return f"{router.name}: the hello lacks the base capability or a session id"
    proc.stdin.write(_CLIENT_HELLO)
    proc.stdin.flush()
    return None


def _socket_ready(path: Path) -> str | None:
    # netconfd creates its socket once its modules are loaded; no probe connection.
    return None if path.is_socket() else f"no socket {path}"


def _wait(
    what: str,
    ready: Callable[[], str | None],
    procs: Sequence[subprocess.Popen[bytes]],
    bound: float,
) -> None:
    deadline = time.monotonic() + bound
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise SetupError(f"{what}: a process exited with status {proc.returncode}")
        reason = ready()
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise SetupError(f"{what}: not ready within {bound:.0f} s: {reason}")
        time.sleep(0.05)


class Fleet:
    """The processes of one ``serve``: a netconfd per router, then sshd."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: list[subprocess.Popen[bytes]] = []
        self.labels: dict[int, str] = {}  # pid -> what it is, for the log

    def start(self) -> None:
        settings, user = self.settings, getpass.getuser()
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        prepare_keys(settings)
        for router in settings.routers:
            rdir = settings.run_dir / router.name
            rdir.mkdir(exist_ok=True)
            sock = rdir / "netconfd.sock"
            if len(os.fsencode(sock)) > _SOCKET_PATH_MAX:
                raise SetupError(f"SANDBOX_RUN_DIR: {sock} is too long for a UNIX socket")
            sock.unlink(missing_ok=True)
            argv = netconfd_argv(router, settings.templates, rdir, user)
            # Each netconfd keeps state under $HOME/.yuma: two must not share a HOME.
            proc = subprocess.Popen(argv, env={**os.environ, "HOME": str(rdir)}, cwd=rdir)
            self.procs.append(proc)
            self.labels[proc.pid] = f"netconfd {router.name}"
            _wait(
                f"netconfd {router.name}",
                functools.partial(_socket_ready, sock),
                [proc],
                settings.timeout_s,
            )
        config = settings.run_dir / "sshd_config"
        config.write_text(sshd_config(settings, user))
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)])
        self.procs.append(sshd)
        self.labels[sshd.pid] = "sshd"
        for router in settings.routers:
            _wait(
                f"router {router.name}",
                functools.partial(netconf_hello, settings, router, HEALTH_TIMEOUT_S),
                self.procs,
                settings.timeout_s,
            )
            print(f"sandbox: {router.name} answers on port {router.port}", flush=True)

    def exited(self) -> subprocess.Popen[bytes] | None:
        return next((p for p in self.procs if p.poll() is not None), None)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def serve(settings: Settings) -> int:
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    fleet = Fleet(settings)
    try:
        fleet.start()
        print("sandbox: ready", flush=True)
        while not stopping:
            gone = fleet.exited()
            if gone is not None:
                print(
                    f"sandbox: {fleet.labels[gone.pid]} exited ({gone.returncode})",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)
        return 0
    except SetupError as exc:
        print(f"sandbox: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        fleet.stop()


def check(settings: Settings) -> int:
    problems = [
        reason
        for router in settings.routers
        if (reason := netconf_hello(settings, router, HEALTH_TIMEOUT_S)) is not None
    ]
    for reason in problems:
        print(f"sandbox: {reason}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["serve"], ["check"]):
        print("usage: routers.py serve|check", file=sys.stderr)
        return 2
    try:
        settings = load_settings(os.environ, serving=args[0] == "serve")
    except SetupError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    return serve(settings) if args[0] == "serve" else check(settings)


if __name__ == "__main__":
    sys.exit(main())
