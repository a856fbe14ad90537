"""Boosts: per started hour of the time both booked and in force, and never again as burst.

Prices in SGD; the customer's billing time zone is Asia/Singapore (UTC+8, no DST).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from idc.events.v1 import circuit_pb2, common_pb2
from idc.type.v1 import money_pb2
from services.billing.domain.boosts import Boost, BoostChange, build_boosts
from services.billing.domain.contracts import (
    ChangeKind,
    ContractChange,
    PriceTerms,
    build_segments,
)
from services.billing.domain.percentile import Sample
from services.billing.domain.rating import BillingMonth, Line, LineKind, rate_circuit
from services.billing.ingest import boost_row_for
from services.common.errors import FailedPrecondition, InvalidArgument

SGT = ZoneInfo("Asia/Singapore")
MARCH = BillingMonth(2025, 3)
APRIL = BillingMonth(2025, 4)
BYTES_PER_MBPS = 37_500_000  # 1 Mbps during 300 s
HOURLY = Decimal("0.0125")  # SGD per Mbps per started hour
PRICE = PriceTerms("SGD", Decimal("3100.00"), Decimal("0"), Decimal("12.50"), 12)


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    """A Singapore wall-clock time, as UTC."""
    return datetime(2025, month, day, hour, minute, tzinfo=SGT).astimezone(UTC)


def boost(
    start: datetime, end: datetime, raised: datetime, reverted: datetime | None = None,
    disconnected: datetime | None = None, base: int = 100, boosted: int = 500,
) -> Boost:
    return Boost("c-1", "b-1", base, boosted, start, end, "SGD", HOURLY, raised, reverted,
                 disconnected)


def change(kind: ChangeKind, when: datetime, mbps: int = 100) -> ContractChange:
    return ContractChange("c-1", "t-1", kind, when, mbps, PRICE, f"{kind}-{when.isoformat()}")


ACTIVE = build_segments([change(ChangeKind.ACTIVATED, at(20, 0, month=2))])


def boost_lines(lines: list[Line]) -> list[Line]:
    return [line for line in lines if line.kind is LineKind.BOOST]


def rated(boosts: list[Boost], month: BillingMonth = MARCH) -> list[Line]:
    return boost_lines(rate_circuit(ACTIVE, [], month, SGT, "SGD", boosts))


def test_two_and_a_half_hours_are_three_started_hours() -> None:
    """10:00 to 12:30, raised and reverted on time: 3 started hours; +400 Mbps at 0.0125 a
    Mbps-hour: 0.0125 * 400 * 3 = 15.00."""
    [line] = rated([boost(at(10, 10), at(10, 12, 30), at(10, 10), at(10, 12, 30))])
    assert line.boost is not None
    assert (line.boost.started_hours, line.boost.added_mbps, line.factor) == (3, 400, 3)
    assert (line.unit_price, line.amount) == (HOURLY, Decimal("15.00"))
    assert line.key == "c-1/BOOST/b-1"
    assert "+400 Mbps (100 to 500 Mbps)" in line.description


def test_the_amount_is_rounded_once_half_up() -> None:
    """+333 Mbps for 3 started hours: 0.0125 * 333 * 3 = 12.4875 -> 12.49 (rounding each
    hour first would give 3 * 4.16 = 12.48)."""
    [line] = rated([boost(at(10, 10), at(10, 12, 30), at(10, 10), boosted=433)])
    assert line.amount == Decimal("12.49")


def test_a_raise_provisioned_ten_minutes_late_is_billed_from_the_raise() -> None:
    """Booked 10:00 to 12:05 (2 h 05 = 3 started hours), raised at 10:10: billed 10:10 to
    12:05 = 1 h 55 = 2 started hours, 0.0125 * 400 * 2 = 10.00."""
    [line] = rated([boost(at(10, 10), at(10, 12, 5), at(10, 10, 10), at(10, 12, 5))])
    assert line.boost is not None
    assert (line.boost.billed_start, line.boost.started_hours) == (at(10, 10, 10), 2)
    assert line.amount == Decimal("10.00")


def test_a_revert_twenty_minutes_late_is_billed_to_the_booked_end() -> None:
    """Booked 10:00 to 12:00, reverted at 12:20: billed to 12:00, 2 started hours (not 3)."""
    [line] = rated([boost(at(10, 10), at(10, 12), at(10, 10), at(10, 12, 20))])
    assert line.boost is not None
    assert (line.boost.billed_end, line.boost.started_hours) == (at(10, 12), 2)
    assert line.amount == Decimal("10.00")


def test_a_revert_that_never_arrives_is_capped_at_the_booked_end() -> None:
    [line] = rated([boost(at(10, 10), at(10, 12), at(10, 10))])
    assert line.boost is not None
    assert (line.boost.billed_end, line.boost.started_hours) == (at(10, 12), 2)


def test_a_disconnect_mid_boost_ends_it_and_its_burst_relief() -> None:
    """Booked 10:00 to 14:00, the circuit disconnected at 11:15: billed 1 h 15 = 2 started
    hours; the boost no longer lowers samples from 11:15."""
    segments = build_segments([
        change(ChangeKind.ACTIVATED, at(20, 0, month=2)),
        change(ChangeKind.DISCONNECTED, at(10, 11, 15)),
    ])
    changes = [BoostChange("c-1", "b-1", False, at(10, 10), 100, 500, at(10, 10), at(10, 14),
                           "SGD", HOURLY, "raise")]
    boosts = build_boosts(changes, segments[-1].end)
    [line] = boost_lines(rate_circuit(segments, [], MARCH, SGT, "SGD", boosts))
    assert line.boost is not None
    assert (line.boost.billed_end, line.boost.started_hours) == (at(10, 11, 15), 2)
    assert line.amount == Decimal("10.00")
    assert boosts[0].in_force == (at(10, 10), at(10, 11, 15))


def test_a_boost_across_the_month_end_is_split_without_an_extra_hour() -> None:
    """Billed 31 March 22:30 to 1 April 02:00 (Singapore): 3 h 30 = 4 started hours, starting
    22:30 and 23:30 (March) and 00:30 and 01:30 (April): 2 + 2. A 40-minute boost 23:40 to
    00:20 is 1 started hour, billed in March where it starts; April has no line (billing
    each month's part by its own started hours would charge 2)."""
    across = boost(at(31, 22, 30), at(1, 2, month=4), at(31, 22, 30))
    march, april = rated([across], MARCH), rated([across], APRIL)
    assert [line.boost.started_hours for line in march + april if line.boost] == [2, 2]
    assert across.started_hours == 4
    assert (march[0].amount, april[0].amount) == (Decimal("10.00"), Decimal("10.00"))
    assert "(2 of its 4 start in the month)" in march[0].description
    short = boost(at(31, 23, 40), at(1, 0, 20, month=4), at(31, 23, 40))
    assert [line.boost.started_hours for line in rated([short], MARCH) if line.boost] == [1]
    assert rated([short], APRIL) == []


def test_a_revert_before_its_raise_waits_for_the_raise() -> None:
    """Redelivery can hand billing the revert first: alone it bills nothing; with the raise
    the boost is billed as if they had come in order."""
    revert = BoostChange("c-1", "b-1", True, at(10, 12), 100, 500, at(10, 10), at(10, 12),
                         "SGD", Decimal(0), "revert")
    raise_ = BoostChange("c-1", "b-1", False, at(10, 10), 100, 500, at(10, 10), at(10, 12),
                         "SGD", HOURLY, "raise")
    assert build_boosts([revert]) == []
    [both] = build_boosts([revert, raise_])
    assert (both.reverted_at, both.price_per_mbps_hour, both.started_hours) == (
        at(10, 12), HOURLY, 2
    )


def mbps(value: int) -> int:
    return value * BYTES_PER_MBPS


def burst_samples() -> list[Sample]:
    """10 samples while the boost (10:00 to 11:00, +400 Mbps) is in force: nine at 450 Mbps,
    one at 520; 10 outside it: nine at 80 Mbps on 11 March, and one at 130 Mbps starting at
    11:00 sharp, when the boost has ended (a sample's start decides)."""
    inside = [Sample(at(10, 10, 5 * i), mbps(520 if i == 3 else 450), mbps(10))
              for i in range(10)]
    outside = [Sample(at(11, 8, 5 * i), mbps(80), mbps(10)) for i in range(9)]
    return [*inside, *outside, Sample(at(10, 11), mbps(130), mbps(10))]


@pytest.mark.parametrize(
    ("boosts", "p95", "amount", "in_boost"),
    [
        # Without the boost: sorted 80 x9, 130, 450 x9, 520; N = 20 discards
        # floor(5 * 20 / 100) = 1 (the 520): p95 450, overage 450 - 100 = 350,
        # 12.50 * 350 = 4375.00 for the whole month.
        ([], 450, Decimal("4375.00"), 0),
        # With it: the ten inside lose 400 Mbps: 50 x9 and 120; sorted 50 x9, 80 x9, 120,
        # 130: the 130 is discarded, p95 120, overage 20, 12.50 * 20 = 250.00.
        ([boost(at(10, 10), at(10, 11), at(10, 10), at(10, 11))], 120, Decimal("250.00"), 10),
    ],
)
def test_burst_counts_only_usage_above_the_boosted_rate(
    boosts: list[Boost], p95: int, amount: Decimal, in_boost: int
) -> None:
    lines = rate_circuit(ACTIVE, burst_samples(), MARCH, SGT, "SGD", boosts)
    [burst] = [line for line in lines if line.kind is LineKind.BURST]
    assert burst.burst is not None
    assert (burst.burst.billed_sample_mbps, burst.amount, burst.burst.samples_in_boost) == (
        p95, amount, in_boost
    )
    assert burst.burst.samples_present == 20


def test_a_late_revert_keeps_the_burst_relief_to_the_revert() -> None:
    """Reverted 20 minutes late (11:20): the routers still ran the boosted rate, so a sample
    at 11:10 is lowered too, though the boost is billed only to 11:00."""
    late = boost(at(10, 10), at(10, 11), at(10, 10), at(10, 11, 20))
    samples = [Sample(at(10, 11, 10), mbps(450), mbps(10))]
    [burst] = [line for line in rate_circuit(ACTIVE, samples, MARCH, SGT, "SGD", [late])
               if line.kind is LineKind.BURST]
    assert burst.burst is not None and burst.burst.billed_sample_mbps == 50


def test_the_kept_peaks_are_not_used_for_a_boosted_month() -> None:
    class Kept:
        def percentile(self, start: datetime, end: datetime) -> None:
            return None

    in_march = boost(at(10, 10), at(10, 11), at(10, 10))
    with pytest.raises(TypeError):
        rate_circuit(ACTIVE, Kept(), MARCH, SGT, "SGD", [in_march])
    assert rate_circuit(ACTIVE, Kept(), APRIL, SGT, "SGD", [in_march])[0].kind is LineKind.MRC


def test_a_scheduled_permanent_change_follows_the_day_rule_from_its_start() -> None:
    """A permanent change scheduled for 20 March 00:00 (provisioned then, an ordinary
    CircuitModified): 1 to 19 March at 3100.00 = 19/31 = 1900.00, 20 to 31 March at
    6200.00 = 12/31 = 2400.00; no boost line."""
    upgraded = PriceTerms("SGD", Decimal("6200.00"), Decimal("0"), Decimal("12.50"), 12)
    segments = build_segments([
        change(ChangeKind.ACTIVATED, at(20, 0, month=2)),
        ContractChange("c-1", "t-1", ChangeKind.MODIFIED, at(20, 0), 500, upgraded, "m-1"),
    ])
    lines = rate_circuit(segments, [], MARCH, SGT, "SGD")
    assert [(x.kind, x.days_covered, x.amount) for x in lines] == [
        (LineKind.MRC, 19, Decimal("1900.00")), (LineKind.MRC, 12, Decimal("2400.00"))
    ]


def test_a_boost_in_another_currency_is_refused() -> None:
    other = Boost("c-1", "b-1", 100, 500, at(10, 10), at(10, 11), "USD", HOURLY, at(10, 10))
    with pytest.raises(FailedPrecondition, match="boost b-1"):
        rated([other])


def test_hours_of_a_window_never_started_are_none() -> None:
    # Raised after its booked end (provisioning far too late): nothing billed.
    late = boost(at(10, 10), at(10, 11), at(10, 11, 30))
    assert late.started_hours == 0 and rated([late]) == []
    assert late.billed_end - late.billed_start == timedelta(0)


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def raise_event() -> circuit_pb2.CircuitModified:
    """A boost's raise: 100 to 500 Mbps, booked 10:00 to 12:00, at 0.0125 a Mbps-hour."""
    return circuit_pb2.CircuitModified(
        event_id="e-1", circuit_id="c-1", tenant_id="t-1", bandwidth_mbps=500,
        effective_time=stamp(at(10, 10)),
        boost=common_pb2.Boost(
            boost_id="b-1", base_bandwidth_mbps=100, boosted_bandwidth_mbps=500,
            start_time=stamp(at(10, 10)), end_time=stamp(at(10, 12)),
        ),
        price=common_pb2.PriceTerms(
            currency_code="SGD", mrc=money_pb2.Money(currency_code="SGD", amount="3100.00"),
            boost_price_per_mbps_hour=money_pb2.Money(currency_code="SGD", amount="0.0125"),
        ),
    )


def test_a_raise_is_kept_with_its_window_and_price() -> None:
    row = boost_row_for(raise_event(), "e-1", at(10, 13))
    assert (row.boost_id, row.revert, row.base_mbps, row.boosted_mbps) == ("b-1", False, 100, 500)
    assert (row.start_time, row.end_time, row.price_per_mbps_hour) == (
        at(10, 10), at(10, 12), "0.0125"
    )
    # A revert back at base needs no price of its own: the raise's is billed.
    revert = raise_event()
    revert.boost.revert, revert.bandwidth_mbps = True, 100
    revert.price.ClearField("boost_price_per_mbps_hour")
    assert boost_row_for(revert, "e-2", at(10, 13)).price_per_mbps_hour == "0"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.boost.end_time.CopyFrom(stamp(at(10, 10))), "boost.end_time"),
        (lambda e: setattr(e.boost, "boosted_bandwidth_mbps", 100),
         "boost.boosted_bandwidth_mbps"),
        (lambda e: setattr(e.boost, "boost_id", ""), "boost.boost_id"),
        (lambda e: setattr(e.boost, "boost_id", "x" * 65), "boost.boost_id"),
        (lambda e: e.price.ClearField("boost_price_per_mbps_hour"),
         "price.boost_price_per_mbps_hour"),
        # A revert must bring the circuit back to its base.
        (lambda e: setattr(e.boost, "revert", True), "bandwidth_mbps"),
    ],
)
def test_a_boost_change_that_does_not_add_up_is_refused(
    change: Callable[[circuit_pb2.CircuitModified], object], field: str
) -> None:
    event = raise_event()
    change(event)
    with pytest.raises(InvalidArgument) as error:
        boost_row_for(event, "e-1", at(10, 13))
    assert error.value.message.startswith(field + ":")
