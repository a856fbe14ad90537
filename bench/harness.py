"""What every workload shares: result rows with their floor and target, latency figures,
peak memory of service processes, and the results file and table."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.services import ServiceProcess

RSS_LIMIT_MB = 250.0


@dataclass
class Row:
    """One figure of a workload next to the same figure of its floor.

    ``ratio`` is value / floor; whether higher or lower is better depends on the figure
    (throughput: higher; latency and time: lower), and ``target`` says which in words.
    """

    workload: str
    figure: str
    unit: str
    value: float
    floor: float | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor == 0:
            return None
        return self.value / self.floor

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Results:
    config: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(format_row(row), flush=True)
        return row

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "system": platform.platform(),
            },
            "config": self.config,
            "rows": [r.as_dict() for r in self.rows],
            "notes": self.notes,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")


def nearest_rank(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile (the value at rank ceil(p/100 * N)), as benchmarks report."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-int(percent * len(ordered)) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def at_least(ratio: float) -> Callable[[float, float], bool]:
    return lambda value, floor: value >= ratio * floor


def at_most(ratio: float) -> Callable[[float, float], bool]:
    return lambda value, floor: value <= ratio * floor


def judged(row: Row, rule: Callable[[float, float], bool], target: str) -> Row:
    row.target = target
    row.met = row.floor is not None and rule(row.value, row.floor)
    return row


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def memory_row(workload: str, service: ServiceProcess) -> Row:
    """Peak RSS of a service process over its life (a fresh process per workload)."""
    value = peak_rss_mb(service.proc.pid)
    return Row(
        workload=workload, figure=f"peak RSS {service.name}", unit="MB", value=value,
        target=f"< {RSS_LIMIT_MB:.0f} MB", met=value < RSS_LIMIT_MB,
    )


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_row(row: Row) -> str:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
    met = "-" if row.met is None else ("met" if row.met else "NOT met")
    return (f"{row.workload:<34} {row.figure + ' (' + row.unit + ')':<34} "
            f"{_number(row.value):>10} {_number(row.floor):>10} {ratio:>6}  "
            f"{row.target:<26} {met}")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| workload | figure | value | floor | ratio | target | met |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        met = "" if row.met is None else ("met" if row.met else "**not met**")
        lines.append(
            f"| {row.workload} | {row.figure} ({row.unit}) | {_number(row.value)} | "
            f"{'' if row.floor is None else _number(row.floor)} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines)
