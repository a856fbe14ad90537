"""Token buckets and the call limits' settings, with an injected clock."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from services.common import errors, streams
from services.common.auth import Principal, Role
from services.common.call_limits import (
    AUTH_FAILURES_RATE_LIMITED,
    RATE_LIMITED,
    CallGuard,
    LimitSettings,
)
from services.common.config import ConfigError
from services.common.grpc_server import ERROR_DOMAIN, status_for
from services.common.ratelimit import Rate, RateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(Rate(per_s=2.0, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)  # refused takes take nothing
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_a_bucket_refills_only_up_to_its_burst() -> None:
    bucket = TokenBucket(Rate(per_s=10.0, burst=2), now=0.0)
    assert bucket.take(0.0) == 0.0
    assert not bucket.full(0.0)
    assert bucket.full(3600.0)
    assert [bucket.take(3600.0) for _ in range(3)][-1] == pytest.approx(0.1)


def test_limiter_keeps_one_bucket_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    rate = Rate(per_s=1.0, burst=1)
    assert limiter.take("a", rate) == 0.0
    assert limiter.take("a", rate) == pytest.approx(1.0)
    assert limiter.take("b", rate) == 0.0
    assert limiter.wait_s("b", rate) == pytest.approx(1.0)
    assert limiter.wait_s("never-seen", rate) == 0.0
    assert len(limiter) == 2  # asking keeps no bucket
    clock.now += 1.0
    assert limiter.take("a", rate) == 0.0


def test_limiter_forgets_idle_buckets_and_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(max_keys=100, clock=clock)
    rate = Rate(per_s=1.0, burst=5)
    for i in range(50):
        limiter.take(f"idle-{i}", rate)
    clock.now += 10.0  # every bucket is full again
    for i in range(30):
        limiter.take(f"busy-{i}", rate)
    assert len(limiter) < 50
    for i in range(500):
        limiter.take(f"flood-{i}", rate)
    assert len(limiter) <= 100


def _guard(clock: Clock, **fields: object) -> CallGuard:
    settings = LimitSettings(
        rates={role: Rate(per_s=1.0, burst=2) for role in Role},
        unauthenticated=Rate(per_s=1.0, burst=1), **fields)  # type: ignore[arg-type]
    return CallGuard(settings, clock=clock)


ALICE = Principal("alice@acme", Role.CUSTOMER, tenant="acme")


def test_guard_throttles_a_principal_after_its_burst_with_the_delay() -> None:
    clock = Clock()
    guard = _guard(clock)
    assert guard.admit(lambda: ALICE, "ipv4:10.0.0.1:1000") == ALICE
    assert guard.admit(lambda: ALICE, "ipv4:10.0.0.1:1001") == ALICE
    with pytest.raises(errors.Throttled) as throttled:
        guard.admit(lambda: ALICE, "ipv4:10.0.0.1:1002")
    assert throttled.value.reason == RATE_LIMITED
    assert throttled.value.retry_after_s == pytest.approx(1.0)
    # The same person's ops token has a bucket of its own.
    ops = Principal("alice@acme", Role.OPS, telco="sg")
    assert guard.admit(lambda: ops, "ipv4:10.0.0.1:1003") == ops
    clock.now += 1.0
    assert guard.admit(lambda: ALICE, "ipv4:10.0.0.1:1004") == ALICE


def test_guard_refuses_an_address_after_its_failed_authentications() -> None:
    clock = Clock()
    guard = _guard(clock)
    looked_up: list[str] = []

    def unknown() -> Principal:
        looked_up.append("token")
        raise errors.Unauthenticated("the bearer token is unknown or revoked")

    with pytest.raises(errors.Unauthenticated):
        guard.admit(unknown, "ipv4:10.0.0.9:1")
    with pytest.raises(errors.Throttled) as throttled:
        guard.admit(unknown, "ipv4:10.0.0.9:2")  # another port, the same address
    assert throttled.value.reason == AUTH_FAILURES_RATE_LIMITED
    assert looked_up == ["token"]  # refused before the lookup
    assert guard.admit(lambda: ALICE, "ipv4:10.0.0.8:1") == ALICE  # other addresses are not
    clock.now += 1.0
    with pytest.raises(errors.Unauthenticated):
        guard.admit(unknown, "ipv4:10.0.0.9:3")


def test_stream_slots_bound_each_principal_and_the_server() -> None:
    slots = streams.StreamSlots(per_key=2, total=3)
    with slots.held("a"), slots.held("a"):
        with pytest.raises(errors.Throttled) as mine, slots.held("a"):
            pass
        assert mine.value.reason == streams.TOO_MANY_STREAMS
        with slots.held("b"):
            with pytest.raises(errors.Throttled) as server, slots.held("c"):
                pass
            assert server.value.reason == streams.SERVER_STREAMS_EXHAUSTED
        assert slots.open_count() == 2
    assert slots.open_count() == 0


def test_limit_settings_from_env() -> None:
    settings = LimitSettings.from_env({
        "IDC_RATE_CUSTOMER_PER_S": "2.5", "IDC_RATE_CUSTOMER_BURST": "7",
        "IDC_RATE_UNAUTHENTICATED_BURST": "3", "IDC_UNARY_DEADLINE_S": "4",
        "IDC_STREAMS_PER_PRINCIPAL": "2", "IDC_STREAMS_MAX": "10",
        "IDC_STREAM_LIFETIME_S": "60"})
    assert settings.rates[Role.CUSTOMER] == Rate(2.5, 7)
    assert settings.rates[Role.OPS] == LimitSettings().rates[Role.OPS]
    assert settings.unauthenticated.burst == 3
    assert (settings.unary_deadline_s, settings.streams_per_principal, settings.streams_max,
            settings.stream_lifetime_s) == (4.0, 2, 10, 60.0)
    assert LimitSettings.from_env({}) == LimitSettings()


@pytest.mark.parametrize(("name", "value"), [
    ("IDC_STREAMS_MAX", "30"), ("IDC_RATE_OPS_PER_S", "0"), ("IDC_UNARY_DEADLINE_S", "soon")])
def test_limit_settings_name_the_bad_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        LimitSettings.from_env({name: value})


def test_every_status_carries_an_error_info_reason() -> None:
    cases = [
        (errors.NotFound("no order o-1"), "NOT_FOUND"),
        (errors.InvalidArgument.for_field("x", "bad"), "INVALID_REQUEST"),
        (errors.InvalidArgument("garbage", reason="MALFORMED_REQUEST"), "MALFORMED_REQUEST"),
        (errors.CapacityExhausted("full"), "CAPACITY_EXHAUSTED"),
        (errors.DeadlineExceeded("late"), "DEADLINE_EXCEEDED"),
    ]
    for error, reason in cases:
        status = status_for(error)
        info = error_details_pb2.ErrorInfo()
        assert status.details[-1].Unpack(info)
        assert (info.reason, info.domain) == (reason, ERROR_DOMAIN)


def test_a_throttled_status_says_when_to_retry() -> None:
    status = status_for(errors.Throttled("slow down", reason=RATE_LIMITED, retry_after_s=0.25))
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() == 250_000_000
