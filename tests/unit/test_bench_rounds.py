"""The bench's rounds: product and floor alternately, each round its own ratio, the row the
median with its spread, and a verdict that says when the rounds disagree on the target."""

from __future__ import annotations

import pytest

from bench.harness import Row, at_least, interleaved, judged, markdown_table


def test_product_and_floor_alternate_round_by_round() -> None:
    calls: list[str] = []

    def product(n: int) -> int:
        calls.append(f"product {n}")
        return n

    def floor(n: int) -> str:
        calls.append(f"floor {n}")
        return str(n)

    assert interleaved(3, product, floor) == ([0, 1, 2], ["0", "1", "2"])
    assert calls == ["product 0", "floor 0", "product 1", "floor 1", "product 2", "floor 2"]


def test_a_row_is_the_median_of_its_rounds_with_their_spread() -> None:
    row = Row.rounds("order", "throughput", "req/s", [10.0, 30.0, 20.0], [100.0, 100.0, 50.0])
    assert (row.value, row.floor) == (20.0, 100.0)
    assert row.ratios == [0.1, 0.3, 0.4]
    assert row.ratio == 0.3  # the median ratio, not median value / median floor (0.2)
    assert row.spread == {"min": 0.1, "max": 0.4, "iqr": None, "wide": True}

    steady = Row.rounds("order", "throughput", "req/s", [10.0, 11.0, 12.0, 13.0], [100.0] * 4)
    spread = steady.spread
    assert spread is not None and not spread["wide"]
    assert spread["iqr"] == pytest.approx([0.1025, 0.1275])


def test_one_round_has_no_spread() -> None:
    row = Row("billing", "month-end run", "s", 2.0, 1.0)
    assert (row.values, row.floors, row.ratio, row.spread) == ([2.0], [1.0], 2.0, None)


@pytest.mark.parametrize(("values", "verdict", "met"), [
    ([30.0, 40.0], "met", True),
    ([10.0, 20.0], "not met", False),
    ([20.0, 30.0], "too noisy to judge", False),
])
def test_the_verdict_judges_every_round(values: list[float], verdict: str, met: bool) -> None:
    row = judged(Row.rounds("order", "throughput", "req/s", values, [100.0, 100.0]),
                 at_least(0.25), ">= 25% of floor")
    assert (row.verdict, row.met) == (verdict, met)
    assert f"| {verdict if met else '**' + verdict + '**'} |" in markdown_table([row])


def test_rounds_need_a_floor_each() -> None:
    with pytest.raises(ValueError, match="2 values against 1 floors"):
        Row.rounds("order", "throughput", "req/s", [1.0, 2.0], [1.0])
