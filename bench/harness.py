"""What every workload shares: result rows with their floor and target, measured in rounds
(product and floor alternately), latency figures, peak memory of service processes, and the
results file and table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the unit tests import the harness, never the devstack
    from devstack.services import ServiceProcess

RSS_LIMIT_MB = 250.0
P = TypeVar("P")
F = TypeVar("F")
# A row whose rounds' ratios differ by more than this factor (max / min) is too noisy to
# compare with another run, whatever its verdict (BENCHMARKS.md, "Rounds").
WIDE_SPREAD = 1.5
MET, NOT_MET, TOO_NOISY = "met", "not met", "too noisy to judge"


@dataclass
class Row:
    """One figure of a workload next to the same figure of its floor, over one or more
    rounds (the product and its floor measured alternately, so a swing of the machine's load
    hits both).

    ``values`` and ``floors`` are the rounds' figures; ``value`` and ``floor`` their medians;
    ``ratio`` the median of the rounds' value / floor. Whether higher or lower is better
    depends on the figure (throughput: higher; latency and time: lower), and ``target`` says
    which in words. ``met`` holds when every round meets the target; ``verdict`` says
    ``too noisy to judge`` when some rounds meet it and others do not.
    """

    workload: str
    figure: str
    unit: str
    value: float
    floor: float | None = None
    target: str = ""
    met: bool | None = None
    values: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)
    verdict: str = ""

    def __post_init__(self) -> None:
        if not self.values:
            self.values = [self.value]
            self.floors = [] if self.floor is None else [self.floor]
        if self.met is not None and not self.verdict:
            self.verdict = MET if self.met else NOT_MET

    @classmethod
    def rounds(cls, workload: str, figure: str, unit: str, values: Sequence[float],
               floors: Sequence[float] | None = None) -> Row:
        """A row from the rounds' figures (``floors``, if any, one per value)."""
        if floors is not None and len(floors) != len(values):
            raise ValueError(f"{len(values)} values against {len(floors)} floors")
        return cls(workload, figure, unit, statistics.median(values),
                   None if floors is None else statistics.median(floors),
                   values=list(values), floors=list(floors or []))

    @property
    def ratios(self) -> list[float]:
        if len(self.floors) != len(self.values) or 0 in self.floors:
            return []
        return [value / floor for value, floor in zip(self.values, self.floors, strict=True)]

    @property
    def ratio(self) -> float | None:
        ratios = self.ratios
        return statistics.median(ratios) if ratios else None

    @property
    def spread(self) -> dict[str, Any] | None:
        """min-max of the rounds' ratios, the interquartile range from 4 rounds on, and
        whether the spread is wide (max / min over ``WIDE_SPREAD``)."""
        ratios = self.ratios
        if len(ratios) < 2:
            return None
        low, high = min(ratios), max(ratios)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else None
        return {
            "min": low, "max": high,
            "iqr": None if quartiles is None else [quartiles[0], quartiles[2]],
            "wide": low <= 0 or high / low > WIDE_SPREAD,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "ratios": self.ratios,
                "spread": self.spread}


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
    """Judge every round: met when all meet the target, not met when none does, too noisy
    to judge when they disagree (``met`` is then false: not shown to be met)."""
    row.target = target
    if len(row.floors) != len(row.values):
        row.met, row.verdict = False, NOT_MET
        return row
    verdicts = {rule(value, floor) for value, floor in zip(row.values, row.floors, strict=True)}
    row.met = verdicts == {True}
    row.verdict = TOO_NOISY if len(verdicts) > 1 else MET if row.met else NOT_MET
    return row


def interleaved(rounds: int, product: Callable[[int], P], floor: Callable[[int], F]) -> tuple[
        list[P], list[F]]:
    """``product(n)`` and ``floor(n)`` alternately for rounds n = 0..rounds-1: product,
    floor, product, floor, ... (a swing of the machine's load hits both). Returns the
    products' figures and the floors'."""
    products: list[P] = []
    floors: list[F] = []
    for n in range(rounds):
        products.append(product(n))
        floors.append(floor(n))
    return products, floors


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


def spread_text(row: Row) -> str:
    """``0.21-0.30`` (min-max of the rounds' ratios), with ``IQR 0.22-0.27`` from 4 rounds
    and ``wide`` past ``WIDE_SPREAD``; empty with fewer than 2 rounds."""
    spread = row.spread
    if spread is None:
        return ""
    text = f"{spread['min']:.2f}-{spread['max']:.2f}"
    if spread["iqr"] is not None:
        text += f" IQR {spread['iqr'][0]:.2f}-{spread['iqr'][1]:.2f}"
    return text + (" wide" if spread["wide"] else "")


def format_row(row: Row) -> str:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
    return (f"{row.workload:<34} {row.figure + ' (' + row.unit + ')':<34} "
            f"{_number(row.value):>10} {_number(row.floor):>10} {ratio:>6} "
            f"{spread_text(row) or '-':<22} {row.target:<26} {row.verdict or '-'}")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| workload | figure | value | floor | ratio | spread | rounds | target | verdict |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        verdict = row.verdict if row.verdict in ("", MET) else f"**{row.verdict}**"
        lines.append(
            f"| {row.workload} | {row.figure} ({row.unit}) | {_number(row.value)} | "
            f"{'' if row.floor is None else _number(row.floor)} | {ratio} | "
            f"{spread_text(row)} | {len(row.values)} | {row.target} | {verdict} |"
        )
    return "\n".join(lines)
