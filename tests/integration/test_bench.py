"""A tiny bench run (every workload, a few seconds each) writes a results file of the
documented shape: every figure with its floor, ratio and target, and each service's peak
memory. Speed itself is never asserted here (that is what the bench reports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.services import REPO_ROOT

pytestmark = pytest.mark.integration

ROW_KEYS = {"workload", "figure", "unit", "value", "floor", "ratio", "target", "met"}


def test_tiny_bench_writes_results_with_floors_targets_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=280, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["config"]["scale"] == "tiny"
    assert {"started", "finished", "host", "rows"} <= results.keys()
    rows = results["rows"]
    assert rows and all(set(row) == ROW_KEYS for row in rows)

    workloads = " ".join(row["workload"] for row in rows)
    for name in ("order postgresql", "order sqlite", "provisioning", "ingest", "billing"):
        assert name in workloads, f"no figures for {name}"

    measured = [row for row in rows if row["floor"] is not None]
    assert all(row["value"] > 0 and row["floor"] > 0 for row in measured)
    assert all(row["ratio"] == pytest.approx(row["value"] / row["floor"]) for row in measured)
    judged = [row for row in rows if row["target"]]
    assert all(isinstance(row["met"], bool) for row in judged)
    assert {row["figure"] for row in judged} >= {
        "throughput", "p99", "approve-to-active p50", "stored in PostgreSQL", "month-end run",
    }

    memory = [row for row in rows if row["unit"] == "MB"]
    assert {row["figure"] for row in memory} == {
        "peak RSS order", "peak RSS provisioning", "peak RSS billing",
    }
    assert all(row["value"] > 0 and row["target"] == "< 250 MB" for row in memory)
    # The readable table is printed too, one line per figure.
    assert run.stdout.count("\n| ") >= len(rows)
