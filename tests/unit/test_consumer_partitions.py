"""When a consumer-group member counts as stuck without partitions, with a clock passed in."""

from __future__ import annotations

import re

import pytest

from services.common.config import ConfigError, KafkaSettings
from services.common.events.assignment import AssignmentWatch, MemberView, Verdict
from services.common.runtime import ConsumerWorker

BOUND = 30.0
HOLD = 10.0
WAITING = MemberView(formed=False, assigned=0, available=6)


def watch() -> AssignmentWatch:
    return AssignmentWatch("consumer group g on t", BOUND, HOLD)


def observe_until(
    w: AssignmentWatch, start: float, end: float, member: MemberView
) -> list[tuple[float, Verdict]]:
    """Observe once a second from ``start`` to ``end``; return the verdicts but WAITING."""
    seen = []
    now = start
    while now <= end:
        verdict = w.observe(now, member)
        if verdict is not Verdict.WAITING:
            seen.append((now, verdict))
        now += 1.0
    return seen


def test_a_member_waiting_past_the_bound_is_recreated_and_reported() -> None:
    w = watch()
    assert observe_until(w, 100.0, 129.0, WAITING) == []
    assert w.alarm(129.0) == []
    assert w.observe(130.0, WAITING) is Verdict.RECREATE
    assert w.recreations == 1
    [text] = w.alarm(130.0)
    assert text == (
        "consumer group g on t: no partitions assigned for 30 s (bound 30 s) though its "
        "topics have 6 partition(s); consumer recreated 1 time(s), next after 60 s"
    )


def test_recreations_back_off_to_eight_bounds() -> None:
    w = watch()
    recreated = [t for t, v in observe_until(w, 0.0, 1000.0, WAITING) if v is Verdict.RECREATE]
    # After 30 s, then 60, 120 and 240 s more, then every 240 s.
    assert recreated == [30.0, 90.0, 210.0, 450.0, 690.0, 930.0]
    assert w.recreations == 6


def test_a_formed_member_without_partitions_is_never_stuck() -> None:
    # More members than partitions: the group formed and gave this one nothing.
    w = watch()
    idle = MemberView(formed=True, assigned=0, available=3)
    assert observe_until(w, 0.0, 3600.0, idle) == [(float(t), Verdict.HELD) for t in range(3601)]
    assert w.alarm(3600.0) == []


def test_topics_without_partitions_are_not_a_stuck_member() -> None:
    w = watch()
    nothing = MemberView(formed=False, assigned=0, available=0)
    assert {v for _, v in observe_until(w, 0.0, 600.0, nothing)} == {Verdict.HELD}
    assert w.alarm(600.0) == []


def test_a_wait_that_ends_within_the_bound_starts_again_from_zero() -> None:
    w = watch()
    assert observe_until(w, 0.0, 29.0, WAITING) == []
    assert w.observe(29.5, MemberView(formed=False, assigned=2, available=6)) is Verdict.HELD
    # A rebalance later: the next wait has its own full bound.
    assert observe_until(w, 40.0, 69.0, WAITING) == []
    assert w.observe(70.0, WAITING) is Verdict.RECREATE


def test_the_alarm_is_held_after_recovery_then_clears() -> None:
    w = watch()
    observe_until(w, 0.0, 30.0, WAITING)
    assert w.observe(33.0, MemberView(formed=True, assigned=3, available=6)) is Verdict.HELD
    assert w.recreations == 0
    [text] = w.alarm(33.0)
    assert text.endswith("; partitions assigned again after 33 s")
    assert w.alarm(42.9) == [text]
    assert w.alarm(43.0) == []


def test_a_new_episode_starts_with_the_first_bound_again() -> None:
    w = watch()
    observe_until(w, 0.0, 100.0, WAITING)  # recreated at 30 and 90
    w.observe(101.0, MemberView(formed=True, assigned=1, available=6))
    recreated = [t for t, v in observe_until(w, 200.0, 289.0, WAITING) if v is Verdict.RECREATE]
    assert recreated == [230.0]  # and the next one at 230 + 60
    assert w.recreations == 1
    assert "recreated 1 time(s)" in w.alarm(230.0)[0]


def test_a_worker_reports_nothing_before_its_consumer_exists() -> None:
    def never() -> object:
        raise AssertionError("the consumer is made by run(), in the polling thread")

    worker = ConsumerWorker("circuit-events", never)  # type: ignore[arg-type]
    alarms = worker.alarms()
    assert list(alarms) == ["circuit-events-unassigned"]
    assert list(alarms["circuit-events-unassigned"]()) == []


def test_the_bound_defaults_to_ten_session_timeouts() -> None:
    assert KafkaSettings.from_env({}).unassigned_bound_s == 100.0
    settings = KafkaSettings.from_env({"IDC_KAFKA_SESSION_TIMEOUT_MS": "2000",
                                       "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "500"})
    assert settings.unassigned_bound_s == 20.0


def test_the_bound_can_be_set() -> None:
    settings = KafkaSettings.from_env({"IDC_KAFKA_UNASSIGNED_ALARM_S": "45"})
    assert settings.unassigned_bound_s == 45.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "IDC_KAFKA_UNASSIGNED_ALARM_S='soon' is not valid"),
        ("0", "IDC_KAFKA_UNASSIGNED_ALARM_S='0' is not valid"),
        ("19", "IDC_KAFKA_UNASSIGNED_ALARM_S must be at least twice IDC_KAFKA_SESSION_TIMEOUT_MS"),
    ],
)
def test_a_bad_bound_stops_the_process_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        KafkaSettings.from_env({"IDC_KAFKA_UNASSIGNED_ALARM_S": value})
