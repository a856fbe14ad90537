"""A tiny bench run (every workload, a few seconds each) writes a results file of the
documented shape: every figure with its floor, ratio and target, the rounds of the order and
provisioning figures with their spread and verdict, and each service's peak memory. Speed
itself is never asserted here (that is what the bench reports)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.services import REPO_ROOT

pytestmark = pytest.mark.integration

ROW_KEYS = {
    "workload", "figure", "unit", "value", "floor", "ratio", "target", "met",
    "values", "floors", "ratios", "spread", "verdict",
}
VERDICTS = {"met", "not met", "too noisy to judge"}


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
    for row in measured:
        ratios = [v / f for v, f in zip(row["values"], row["floors"], strict=True)]
        assert row["ratios"] == pytest.approx(ratios)
        assert row["ratio"] == pytest.approx(statistics.median(ratios))
        assert row["value"] == pytest.approx(statistics.median(row["values"]))
        assert row["floor"] == pytest.approx(statistics.median(row["floors"]))
    # Order and provisioning figures are measured in rounds (2 with --tiny), with a spread.
    assert results["config"]["rounds"] == 2
    in_rounds = [row for row in measured if row["workload"].startswith(("order", "provisioning"))]
    assert in_rounds and all(len(row["values"]) == 2 for row in in_rounds)
    for row in in_rounds:
        spread = row["spread"]
        assert spread["min"] == pytest.approx(min(row["ratios"]))
        assert spread["max"] == pytest.approx(max(row["ratios"]))
        assert spread["iqr"] is None  # from 4 rounds on
        assert spread["wide"] == (spread["max"] / spread["min"] > 1.5)
    judged = [row for row in rows if row["target"]]
    assert all(isinstance(row["met"], bool) and row["verdict"] in VERDICTS for row in judged)
    assert all(row["met"] == (row["verdict"] == "met") for row in judged)
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
