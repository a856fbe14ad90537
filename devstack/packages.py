"""Install the Debian packages the devstack's peers come from, when they are missing.

Public API::

    ensure_debian_packages({"netconfd": "/usr/sbin/netconfd", ...}) -> None

The mapping is *package name -> a file that package installs* (a glob is allowed); a
package counts as present when that file exists, and is executable if it is a program.
Missing packages are installed with ``apt-get`` when we run as root (``apt-get update``
runs at most once per process); otherwise :class:`DevstackError` gives the command to run.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping

from devstack.process import DevstackError

__all__ = ["ensure_debian_packages", "missing_debian_packages"]

_APT_TIMEOUT_S = 900.0
_lock = threading.Lock()
# Processes installing at once (the suite's pytest-xdist workers) take turns: a second
# apt-get would fail on dpkg's lock instead of waiting for it.
_PROCESS_LOCK = os.path.join(tempfile.gettempdir(), "idc-devstack-apt.lock")
_apt_updated = False


def _present(path: str) -> bool:
    # A glob names a file whose directory varies by architecture (/usr/lib/*/...); programs
    # must also be executable, libraries and data files need only exist.
    for match in glob.glob(path):
        if os.path.isfile(match) and ("/bin/" not in match or os.access(match, os.X_OK)):
            return True
    return False


def missing_debian_packages(packages: Mapping[str, str]) -> list[str]:
    """The packages of ``packages`` (name -> an installed file, glob allowed) not present."""
    return sorted(name for name, path in packages.items() if not _present(path))


def _install_command(names: list[str]) -> str:
    return "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y " + " ".join(
        shlex.quote(n) for n in names
    )


def _run_apt(argv: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_APT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevstackError(f"{shlex.join(argv)} failed: {exc}") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).decode("utf-8", errors="replace")
        tail = "\n".join(out.splitlines()[-30:])
        raise DevstackError(
            f"{shlex.join(argv)} exited with status {done.returncode}; output tail:\n{tail}"
        )


@contextlib.contextmanager
def _installing_alone(timeout_s: float = 2 * _APT_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock that other processes of this machine install under."""
    with open(_PROCESS_LOCK, "a") as file:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DevstackError(
                        f"another process held {_PROCESS_LOCK} (installing packages) for "
                        f"more than {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def ensure_debian_packages(packages: Mapping[str, str]) -> None:
    """Make sure every package of ``packages`` (name -> a file it installs) is installed.

    Does nothing when all files are present. As root, runs ``apt-get update`` (once per
    process) and ``DEBIAN_FRONTEND=noninteractive apt-get install -y <missing>``. Not as
    root, or without ``apt-get``, raises :class:`DevstackError` with the command to run.
    """
    global _apt_updated  # noqa: PLW0603 - one apt-get update per process
    missing = missing_debian_packages(packages)
    if not missing:
        return
    command = _install_command(missing)
    if shutil.which("apt-get") is None:
        raise DevstackError(
            f"missing packages {', '.join(missing)} and no apt-get on this machine; "
            f"on Debian or Ubuntu run as root: {command}"
        )
    if os.geteuid() != 0:
        raise DevstackError(
            f"missing packages {', '.join(missing)}; install them as root first:\n"
            f"  sudo sh -c {shlex.quote(command)}"
        )
    with _lock, _installing_alone():
        # Another thread or process may have installed them meanwhile.
        missing = missing_debian_packages(packages)
        if not missing:
            return
        if not _apt_updated:
            _run_apt(["apt-get", "update"])
            _apt_updated = True
        _run_apt(["apt-get", "install", "-y", *missing])
        still = missing_debian_packages(packages)
        if still:
            raise DevstackError(
                f"apt-get installed {', '.join(missing)} but these files are still missing: "
                + ", ".join(packages[n] for n in still)
            )
