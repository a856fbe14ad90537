"""The kept 95th-percentile state answers exactly what a scan of all samples answers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.billing.domain.peaks import (
    KeptMonth,
    NeedsScan,
    PeakState,
    billing_month,
    capacity_for,
    entry_of,
    kept_month,
    merge,
    pack,
    sample_of,
    unpack,
    usable,
)
from services.billing.domain.percentile import Sample, nearest_rank_p95
from services.billing.domain.rating import BillingMonth

SGT = ZoneInfo("Asia/Singapore")
MARCH = BillingMonth(2025, 3)
START, END = MARCH.window(SGT)
RECEIVED = datetime(2025, 4, 1, tzinfo=UTC)


def month_samples(rng: random.Random, count: int, *, mixed: bool) -> list[Sample]:
    """Random samples of March (SGT) with many ties, invalid ones, and optionally
    intervals of 60 s and 600 s among the 300 s ones."""
    intervals = rng.sample(range(8928), count)
    samples = []
    for i in intervals:
        seconds = rng.choice((60, 300, 600)) if mixed else 300
        samples.append(Sample(
            START + timedelta(minutes=5 * i),
            rng.choice((0, 7, 50, 1000)) * seconds * rng.randint(1, 3),
            rng.randint(0, 30) * seconds,
            seconds,
            valid=rng.random() > 0.05,
        ))
    return samples


def kept(state: PeakState, zone: str = "Asia/Singapore",
         month: BillingMonth = MARCH) -> KeptMonth:
    return kept_month(state, "c-1", zone, month)


def fed(samples: list[Sample], rng: random.Random) -> PeakState:
    """The state after the samples arrived in random batches."""
    state = PeakState(capacity_for(MARCH, SGT))
    order = list(samples)
    rng.shuffle(order)
    while order:
        size = rng.randint(1, 50)
        batch, order = order[:size], order[size:]
        state = merge(state, [entry_of(s) for s in batch if s.valid], RECEIVED)
    return state


@pytest.mark.parametrize("seed", range(30))
def test_state_equals_the_scan_on_random_months(seed: int) -> None:
    rng = random.Random(seed)
    samples = month_samples(rng, rng.choice((1, 19, 20, 21, 500, 3000, 8928)), mixed=seed % 2 == 1)
    state = fed(samples, rng)
    assert state.samples == sum(s.valid for s in samples)
    assert state.percentile() == nearest_rank_p95(samples)
    assert kept(state).percentile(START, END) == nearest_rank_p95(samples)


def test_state_keeps_what_a_full_month_needs() -> None:
    assert capacity_for(MARCH, SGT) == 8928 * 5 // 100 + 1
    assert capacity_for(BillingMonth(2025, 2), SGT) == 8064 * 5 // 100 + 1
    rng = random.Random(1)
    state = fed(month_samples(rng, 8928, mixed=False), rng)
    assert len(state.top_in) == len(state.top_out) == state.capacity
    assert state.complete


def test_a_full_top_list_is_kept_as_it_is_when_no_new_sample_enters_it() -> None:
    rng = random.Random(2)
    state = fed(month_samples(rng, 2000, mixed=False), rng)
    low = merge(state, [entry_of(Sample(END - timedelta(minutes=5), 0, 0))], RECEIVED)
    assert low.top_in is state.top_in and low.top_out is state.top_out
    high = merge(state, [entry_of(Sample(END - timedelta(minutes=5), 10**12, 0))], RECEIVED)
    assert high.top_in[0][2] == 10**12 and high.top_out is state.top_out


def test_more_samples_than_the_state_keeps_asks_for_a_scan() -> None:
    state = PeakState(capacity=2)
    entries = [entry_of(Sample(START + timedelta(minutes=i), 10 * i, 1, 60)) for i in range(40)]
    # floor(5 * 39 / 100) = 1: the second highest; floor(5 * 40 / 100) = 2: the third
    assert merge(state, entries[:39], RECEIVED).percentile() is not None
    assert not merge(state, entries, RECEIVED).complete
    with pytest.raises(NeedsScan):
        merge(state, entries, RECEIVED).percentile()


def test_segments_the_state_covers_whole_or_not_at_all_and_the_rest_asks_for_a_scan() -> None:
    middle = START + timedelta(days=15)
    samples = [Sample(middle + timedelta(minutes=5 * i), 100 + i, 5) for i in range(100)]
    usage = kept(merge(PeakState(capacity_for(MARCH, SGT)),
                       [entry_of(s) for s in samples], RECEIVED))
    assert usage.percentile(START, END) == nearest_rank_p95(samples)
    assert usage.percentile(middle, END) == nearest_rank_p95(samples)
    assert usage.percentile(START, middle) is None
    assert usage.percentile(middle + timedelta(days=1), END) is None
    with pytest.raises(NeedsScan):
        usage.percentile(START, middle + timedelta(minutes=30))
    assert kept(PeakState(10)).percentile(START, END) is None


def test_a_full_state_beyond_its_capacity_asks_for_a_scan_at_month_end() -> None:
    entries = [entry_of(Sample(START + timedelta(minutes=i), 10 * i, 1, 60)) for i in range(40)]
    with pytest.raises(NeedsScan):
        kept(merge(PeakState(capacity=2), entries, RECEIVED)).percentile(START, END)


def test_the_first_and_last_start_and_the_latest_arrival_are_tracked() -> None:
    state = PeakState(capacity_for(MARCH, SGT))
    later = RECEIVED + timedelta(hours=1)
    assert merge(state, [], later) == state
    after = merge(state, [entry_of(Sample(END - timedelta(minutes=5), 2, 2))], later)
    after = merge(after, [entry_of(Sample(START, 1, 1))], RECEIVED)
    assert (after.first_start, after.last_start, after.last_received) == (
        START, END - timedelta(minutes=5), later)


def test_month_is_cut_in_the_customer_zone_and_entries_round_trip() -> None:
    assert billing_month(datetime(2025, 3, 31, 15, 59, tzinfo=UTC), SGT) == MARCH
    assert billing_month(datetime(2025, 3, 31, 16, 0, tzinfo=UTC), SGT) == BillingMonth(2025, 4)
    sample = Sample(datetime(2025, 3, 3, 1, 2, 3, 456, tzinfo=UTC), 2**62, 0, 60)
    assert unpack(pack([entry_of(sample)])) == (entry_of(sample),)
    assert sample_of(entry_of(sample)) == sample


def test_the_state_is_used_only_for_its_zone_and_a_cut_off_after_its_last_arrival() -> None:
    one = [entry_of(Sample(START + timedelta(days=3), 10, 10))]
    march = kept(merge(PeakState(capacity_for(MARCH, SGT)), one, RECEIVED))
    zone = "Asia/Singapore"
    assert usable([march], zone, MARCH, RECEIVED) == march
    assert usable([march], zone, MARCH, RECEIVED - timedelta(seconds=1)) is None
    assert usable([march], "UTC", MARCH, RECEIVED) is None
    assert usable([], zone, MARCH, RECEIVED) is None
    # Samples once filed under another zone next to the month: they may belong to it.
    elsewhere = kept(merge(PeakState(10), one, RECEIVED), "UTC", BillingMonth(2025, 4))
    assert usable([march, elsewhere], zone, MARCH, RECEIVED) is None
    far = kept(merge(PeakState(10), one, RECEIVED), "UTC", BillingMonth(2025, 6))
    assert usable([march, far], zone, MARCH, RECEIVED) == march
