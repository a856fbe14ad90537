"""Counter arithmetic of the meter: wrap, reset, gaps, exact totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.billing.meter.domain import (
    COUNTER_MODULUS,
    COUNTER_RESET,
    Reading,
    advance,
    counter_delta,
    slot_start,
    subinterface_name,
)

T0 = datetime(2026, 11, 1, 10, 0, 0, 200_000, tzinfo=UTC)  # a poll 0.2 s after 10:00
FIVE_MIN = 300


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_slot_start_aligns_to_the_interval() -> None:
    assert slot_start(at(0), FIVE_MIN) == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert slot_start(at(4.99), FIVE_MIN) == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert slot_start(at(5), FIVE_MIN) == datetime(2026, 11, 1, 10, 5, tzinfo=UTC)


def test_first_reading_only_sets_the_baseline() -> None:
    first = Reading(1000, 2000, at(0))
    result = advance(None, first, FIVE_MIN)
    assert result.samples == ()
    assert result.baseline == first


def test_one_interval_gives_the_counter_difference() -> None:
    result = advance(Reading(1000, 2000, at(0)), Reading(4000, 2500, at(5)), FIVE_MIN)
    (sample,) = result.samples
    assert sample.interval_start == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert (sample.bytes_in, sample.bytes_out, sample.valid) == (3000, 500, True)
    assert result.baseline.read_at == at(5)


def test_a_reading_in_the_same_slot_keeps_the_baseline() -> None:
    baseline = Reading(1000, 2000, at(0))
    result = advance(baseline, Reading(1500, 2100, at(2)), FIVE_MIN)
    assert result.samples == ()
    assert result.baseline == baseline


def test_wrap_at_2_pow_64_counts_the_bytes_across_the_wrap() -> None:
    before = Reading(COUNTER_MODULUS - 100, COUNTER_MODULUS - 1, at(0))
    after = Reading(50, 9, at(5))
    (sample,) = advance(before, after, FIVE_MIN).samples
    assert (sample.bytes_in, sample.bytes_out, sample.valid) == (150, 10, True)


def test_counter_reset_makes_the_interval_invalid_never_huge_or_negative() -> None:
    before = Reading(10_000_000_000, 8_000_000_000, at(0))
    after_reboot = Reading(1_200, 900, at(5))
    result = advance(before, after_reboot, FIVE_MIN)
    (sample,) = result.samples
    assert not sample.valid
    assert sample.invalid_reason == COUNTER_RESET
    assert (sample.bytes_in, sample.bytes_out) == (0, 0)
    # The reading after the reboot is the new baseline: the next interval counts from it.
    (following,) = advance(result.baseline, Reading(2_200, 1_900, at(10)), FIVE_MIN).samples
    assert (following.bytes_in, following.bytes_out, following.valid) == (1000, 1000, True)


def test_reset_in_one_direction_invalidates_both() -> None:
    before = Reading(5_000_000, 100, at(0))
    (sample,) = advance(before, Reading(10, 200, at(5)), FIVE_MIN).samples
    assert not sample.valid


def test_new_discontinuity_time_is_a_reset_even_if_the_counters_grew() -> None:
    boot1 = datetime(2026, 10, 1, tzinfo=UTC)
    boot2 = at(3)
    before = Reading(100, 100, at(0), discontinuity_time=boot1)
    after = Reading(5_000, 5_000, at(5), discontinuity_time=boot2)
    (sample,) = advance(before, after, FIVE_MIN).samples
    assert not sample.valid


def test_missed_polls_are_a_gap_kept_as_one_volume_record() -> None:
    # Polls at 10:05 and 10:10 were missed: three intervals are bracketed, none a sample.
    result = advance(Reading(0, 1_000, at(0)), Reading(1_000, 1_002, at(15)), FIVE_MIN)
    (volume,) = result.samples
    assert volume.gap_volume
    assert volume.intervals == 3
    assert volume.interval_start == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert (volume.bytes_in, volume.bytes_out, volume.valid) == (1_000, 2, True)


def test_only_exactly_one_slot_is_a_sample() -> None:
    (sample,) = advance(Reading(0, 0, at(0)), Reading(7, 9, at(5)), FIVE_MIN).samples
    assert not sample.gap_volume
    assert (sample.intervals, sample.bytes_in, sample.bytes_out) == (1, 7, 9)


def test_a_long_gap_keeps_the_exact_delta_across_a_wrap() -> None:
    # A day of missed polls (288 intervals) with a wrap inside it.
    before = Reading(COUNTER_MODULUS - 7, 0, at(0))
    after = Reading(123_456_789_012, 987_654_321, at(24 * 60))
    (volume,) = advance(before, after, FIVE_MIN).samples
    assert volume.intervals == 288
    assert volume.bytes_in == 123_456_789_012 + 7
    assert volume.bytes_out == 987_654_321


def test_reset_across_missed_polls_is_one_invalid_gap_record() -> None:
    (volume,) = advance(Reading(9_999, 9_999, at(0)), Reading(1, 1, at(10)), FIVE_MIN).samples
    assert (volume.valid, volume.intervals, volume.bytes_in, volume.bytes_out) == (
        False, 2, 0, 0,
    )


def test_counter_delta_rejects_an_implausible_wrap() -> None:
    # Wrapping from 1000 to 10 means ~2^64 bytes in 5 minutes: that is a reset.
    assert counter_delta(1000, 10, 300, 50 * 10**9) is None
    assert counter_delta(COUNTER_MODULUS - 1, 0, 300, 50 * 10**9) == 1
    assert counter_delta(10, 1000, 300, 1) == 990


def test_reading_rejects_values_outside_64_bits() -> None:
    with pytest.raises(ValueError, match="in_octets"):
        Reading(-1, 0, at(0))
    with pytest.raises(ValueError, match="out_octets"):
        Reading(0, COUNTER_MODULUS, at(0))
    with pytest.raises(ValueError, match="timezone"):
        Reading(0, 0, datetime(2026, 1, 1))


def test_subinterface_name() -> None:
    assert subinterface_name("xe-0/0/1", 100) == "xe-0/0/1.100"
    with pytest.raises(ValueError, match="vlan_id"):
        subinterface_name("xe-0/0/1", 0)


def test_both_ends_are_metered_by_default_and_the_old_setting_is_refused() -> None:
    from idc.type.v1 import side_pb2
    from services.billing.meter.config import MeterSettings
    from services.common.config import ConfigError

    assert MeterSettings.from_env({}).sides == (
        side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING,
    )
    assert MeterSettings.from_env({"IDC_METER_SIDES": "chongqing"}).sides == (
        side_pb2.SIDE_CHONGQING,
    )
    with pytest.raises(ConfigError, match="IDC_METER_SIDES"):
        MeterSettings.from_env({"IDC_METER_SIDE": "singapore"})
    for bad in ("mars", "singapore,singapore"):
        with pytest.raises(ConfigError, match="IDC_METER_SIDES"):
            MeterSettings.from_env({"IDC_METER_SIDES": bad})
