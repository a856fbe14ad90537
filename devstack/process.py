"""Child processes for the devstack that cannot outlive the process that started them.

The devstack starts real peers (a Kafka-compatible broker, NETCONF agents, sshd) as
children of the test session or of ``make run``. Each child:

* runs in its own session and process group (``start_new_session=True``), so it and
  anything it forks can be stopped together with :func:`stop`;
* asks the Linux kernel to send it ``SIGTERM`` when its parent thread dies
  (``PR_SET_PDEATHSIG``, set by util-linux ``setpriv`` right before it executes the
  program), so a killed test session leaves no orphans;
* writes its stdout and stderr to a log file, whose tail is quoted in errors.

Public API::

    spawn(argv, *, env=None, cwd=None, log_path) -> subprocess.Popen[bytes]
    free_port(host="127.0.0.1") -> int
    wait_for_port(host, port, timeout, *, name=None, proc=None, log_path=None) -> None
    stop(proc, timeout=5.0) -> None
    log_tail(log_path, lines=40) -> str
    class DevstackError(RuntimeError)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

__all__ = ["DevstackError", "Peer", "free_port", "log_tail", "spawn", "stop", "wait_for_port"]


class DevstackError(RuntimeError):
    """A devstack peer could not be installed, started or reached."""


class Peer:
    """Something the devstack started; leaving a ``with`` block closes it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# setpriv (util-linux, essential on Debian) sets the death signal and then executes the
# program. Doing it in a preexec_fn instead can deadlock: forking with a Python callback
# from a process whose other threads hold interpreter locks (gRPC, Kafka clients) hangs.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def _with_death_signal(args: list[str]) -> list[str]:
    if _SETPRIV is None:
        return args
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *args]


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str],
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a child that dies with us; stdout and stderr go to ``log_path``.

    ``env`` replaces the environment when given (pass ``{**os.environ, ...}`` to extend it).
    The log file is opened for appending; its parent directory is created if needed.
    Raises :class:`DevstackError` if the program cannot be executed.

    Note: the kernel delivers the death signal when the *thread* that forked the child
    exits, so call this from a thread that lives as long as the child should (the main
    thread, or the pytest session thread).
    """
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [os.fspath(a) for a in argv]
    if shutil.which(args[0], path=(env or os.environ).get("PATH")) is None:
        raise DevstackError(f"cannot start {args[0]}: no such executable")
    with log.open("ab") as out:
        try:
            return subprocess.Popen(
                _with_death_signal(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise DevstackError(f"cannot start {args[0]}: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind to port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(log_path: str | os.PathLike[str] | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it cannot be read."""
    if log_path is None:
        return "(no log)"
    try:
        data = Path(log_path).read_bytes()
    except OSError as exc:
        return f"(cannot read {log_path}: {exc})"
    text = data[-64 * 1024 :].decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    name: str | None = None,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds, at most ``timeout`` seconds.

    If ``proc`` is given and exits first, fail at once. On failure raises
    :class:`DevstackError` naming ``name`` (default ``host:port``) and quoting the tail of
    ``log_path``.
    """
    what = name or f"{host}:{port}"
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if proc is not None and proc.poll() is not None:
            raise DevstackError(
                f"{what} exited with status {proc.returncode} before listening on "
                f"{host}:{port}; log tail:\n{log_tail(log_path)}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise DevstackError(
                f"{what} did not listen on {host}:{port} within {timeout:.1f} s; "
                f"log tail:\n{log_tail(log_path)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The child leads its own session, so its process group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _exited_unreaped(pid: int) -> bool:
    """True once ``pid`` has exited; leaves it a zombie so its pid (and group id) stay ours."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a child started by :func:`spawn` together with its process group.

    Sends SIGTERM to the group, waits up to ``timeout`` seconds for the child, then sends
    SIGKILL to whatever is left of the group, and reaps the child. Safe to call more than
    once and on a child that already exited.
    """
    if proc.returncode is not None:
        return
    pid = proc.pid
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not _exited_unreaped(pid) and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    # The leader is still a zombie (not reaped), so its group id cannot have been reused:
    # killing the group now only hits its own leftovers.
    _signal_group(pid, signal.SIGKILL)
    proc.wait()
