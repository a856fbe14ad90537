"""Limits that protect a service from its callers, applied by the gRPC interceptor.

- Rate: a token bucket per principal (per role: rate and burst from settings). A call with
  no valid token costs a token of its peer address's bucket instead; while that bucket is
  empty the address's calls are refused before their token is looked up, so guessing tokens
  is slow and does not cost a database lookup each. Calls with valid tokens never draw on it.
- Deadline: a unary call gets the client's deadline, at most ``unary_deadline_s``
  (services/common/deadlines.py says how the handler's work honours it).
- Streams: per principal and in all (services/common/streams.py), with a lifetime.
- Bodies: a request that does not parse answers INVALID_ARGUMENT (reason MALFORMED_REQUEST)
  instead of gRPC's INTERNAL and a logged traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.common import deadlines, streams
from services.common.auth import Principal, Role, current_principal
from services.common.config import ConfigError, positive_float, positive_int
from services.common.db import GRPC_THREADS
from services.common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Throttled,
    Unauthenticated,
)
from services.common.ratelimit import Clock, Rate, RateLimiter

log = logging.getLogger(__name__)

RATE_LIMITED = "RATE_LIMITED"
AUTH_FAILURES_RATE_LIMITED = "AUTH_FAILURES_RATE_LIMITED"
MALFORMED_REQUEST = "MALFORMED_REQUEST"
# Handler threads no stream may take: unary calls always have these.
UNARY_THREAD_RESERVE = 8

DEFAULT_RATES: Mapping[Role, Rate] = {
    Role.CUSTOMER: Rate(per_s=50.0, burst=100),
    Role.OPS: Rate(per_s=100.0, burst=200),
    Role.BILLING_ADMIN: Rate(per_s=50.0, burst=100),
    Role.ADMIN: Rate(per_s=100.0, burst=200),
}
# Failed authentications per peer address.
DEFAULT_UNAUTHENTICATED_RATE = Rate(per_s=5.0, burst=20)


def _rate(env: Mapping[str, str], who: str, default: Rate) -> Rate:
    prefix = f"IDC_RATE_{who.upper()}_"
    return Rate(per_s=positive_float(env, prefix + "PER_S", default.per_s),
                burst=positive_int(env, prefix + "BURST", default.burst))


@dataclass(frozen=True)
class LimitSettings:
    rates: Mapping[Role, Rate] = field(default_factory=lambda: dict(DEFAULT_RATES))
    unauthenticated: Rate = DEFAULT_UNAUTHENTICATED_RATE
    unary_deadline_s: float = 30.0
    streams_per_principal: int = 4
    streams_max: int = 16
    stream_lifetime_s: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LimitSettings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            rates={role: _rate(env, role.value, rate) for role, rate in d.rates.items()},
            unauthenticated=_rate(env, "unauthenticated", d.unauthenticated),
            unary_deadline_s=positive_float(env, "IDC_UNARY_DEADLINE_S", d.unary_deadline_s),
            streams_per_principal=positive_int(
                env, "IDC_STREAMS_PER_PRINCIPAL", d.streams_per_principal),
            streams_max=positive_int(env, "IDC_STREAMS_MAX", d.streams_max),
            stream_lifetime_s=positive_float(env, "IDC_STREAM_LIFETIME_S", d.stream_lifetime_s),
        )
        most = GRPC_THREADS - UNARY_THREAD_RESERVE
        if settings.streams_max > most:
            raise ConfigError(
                f"IDC_STREAMS_MAX={settings.streams_max} is not valid: at most {most} (the "
                f"{GRPC_THREADS} handler threads less {UNARY_THREAD_RESERVE} kept for unary "
                "calls)")
        return settings


class CallGuard:
    """The limits of one server; thread-safe, shared by every call."""

    def __init__(self, settings: LimitSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self._rates = RateLimiter(clock=clock) if clock else RateLimiter()
        self._failures = RateLimiter(clock=clock) if clock else RateLimiter()
        self.slots = streams.StreamSlots(settings.streams_per_principal, settings.streams_max)

    def admit(self, authenticate: Callable[[], Principal | None], peer: str
              ) -> Principal | None:
        """The caller's principal, or Throttled / Unauthenticated."""
        address = _address(peer)
        limit = self.settings.unauthenticated
        wait = self._failures.wait_s(address, limit)
        if wait:
            raise Throttled(
                "too many calls without a valid token from your address; retry later",
                reason=AUTH_FAILURES_RATE_LIMITED, retry_after_s=wait)
        try:
            principal = authenticate()
        except Unauthenticated:
            self._failures.take(address, limit)
            raise
        if principal is not None:
            rate = self.settings.rates[principal.role]
            wait = self._rates.take(_key(principal), rate)
            if wait:
                raise Throttled(
                    f"more than {rate.per_s:g} calls a second (bursts of {rate.burst}) for "
                    f"a {principal.role} token; retry after {wait:.2f} s",
                    reason=RATE_LIMITED, retry_after_s=wait)
        return principal

    def unary_timeout_s(self, context: grpc.ServicerContext) -> float:
        """A unary call's deadline: the client's, at most ``unary_deadline_s``."""
        return min(context.time_remaining(), self.settings.unary_deadline_s)

    @contextmanager
    def stream(self, principal: Principal | None, peer: str) -> Iterator[None]:
        """A stream slot and the stream's lifetime for the block."""
        key = _key(principal) if principal is not None else _address(peer)
        with self.slots.held(key), streams.lifetime(self.settings.stream_lifetime_s):
            yield


def late_error(error: Exception, method: str) -> DeadlineExceeded | None:
    """DeadlineExceeded for an error raised once the call's deadline had passed: the bounded
    lock wait or statement that raised it was the deadline's doing (deadlines.py)."""
    if not deadlines.passed():
        return None
    log.info("%s ran past its deadline: %s: %s", method, type(error).__name__, error)
    return DeadlineExceeded("the call's deadline passed before it was done; nothing was saved")


def current_caller() -> Principal | None:
    """The principal of the call being served; None on a server without tokens."""
    try:
        return current_principal()
    except Unauthenticated:
        return None


def _key(principal: Principal) -> str:
    # The role too: one person may hold a customer and an ops token.
    return f"{principal.role}:{principal.ref}"


def _address(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7' (the port changes with every connection)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


@dataclass(frozen=True)
class Undecodable:
    """What a request body that did not parse becomes; the handler never sees it."""

    error: Exception


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns Undecodable instead of raising (gRPC would answer
    INTERNAL and log a traceback)."""
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as error:
            return Undecodable(error)

    return deserialize


def check_decoded(request: Any, method: str) -> None:
    if isinstance(request, Undecodable):
        raise InvalidArgument(
            f"the request body is not a valid request message of {method} "
            f"({type(request.error).__name__}: {request.error})", reason=MALFORMED_REQUEST)
