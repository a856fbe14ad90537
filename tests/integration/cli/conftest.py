"""One running stack (the `make run` stack on free ports) for the idcctl tests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from rich.console import Console

from devstack.run import RunningStack, StackOptions, start_everything
from devstack.services import REPO_ROOT
from services.cli import main


# Package scope: the stack stops once the idcctl tests are done, instead of idling (a
# whole stack's consumers, relays and router workers) through the rest of the suite.
@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    options = StackOptions(
        var_dir=tmp_path_factory.mktemp("cli-stack"), fixed_ports=False, fast=True,
        meter_interval_s=2,
    )
    with start_everything(options) as running:
        yield running


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


Idcctl = Callable[..., Outcome]


@pytest.fixture
def idcctl(stack: RunningStack) -> Idcctl:
    """Run idcctl as the holder of a demo token: in this process (the machine is shared;
    a process per call is slow), or the installed console script with ``installed=True``.
    Either way the server addresses and token come from the environment."""

    def run(
        *argv: str, token: str = "customer", env: dict[str, str] | None = None,
        installed: bool = False,
    ) -> Outcome:
        variables = {**stack.cli_env(token), "COLUMNS": "200", **(env or {})}
        if installed:
            done = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "idcctl"), *argv],
                cwd=REPO_ROOT, env={**os.environ, **variables},
                capture_output=True, text=True, timeout=120, check=False,
            )
            return Outcome(done.returncode, done.stdout, done.stderr)
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.dict(os.environ, variables), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code, _ = main.run(
                    list(argv),
                    console=Console(file=out, width=200),
                    error_console=Console(file=err, width=200),
                )
            except SystemExit as exited:  # argparse: --help, or a bad command line
                code = int(exited.code or 0)
        return Outcome(code, out.getvalue(), err.getvalue())

    return run


def _json(out: Outcome) -> Any:
    assert out.code == 0, out.stderr
    return json.loads(out.stdout)


def active_circuit(idcctl: Idcctl, spec: list[str]) -> str:
    """Order ``spec``, approve it for both telcos and wait until the circuit is ACTIVE."""
    order = _json(idcctl("customer", "order", *spec, "-o", "json"))["order"]
    for ops in ("ops-sg", "ops-cq"):
        deadline = time.monotonic() + 60
        while True:
            pending = _json(idcctl("ops", "pending", "-o", "json", token=ops))
            found = [p for p in pending.get("pendingApprovals", [])
                     if p["order"]["id"] == order["id"] and p.get("payload", {}).get("sha256")]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found, f"{ops} never saw the order's payload"
        approved = idcctl("ops", "approve", order["id"], "--sha256",
                          found[0]["payload"]["sha256"], token=ops)
        assert approved.code == 0, approved.stderr
    watched = idcctl("customer", "watch", order["id"])
    assert watched.code == 0, watched.stdout + watched.stderr
    return str(order["circuitId"])
