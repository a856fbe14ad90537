"""Webhook rules as pure functions: the signature, the retry schedule, what a subscription
may be and what a delivery's body says."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

SIGNATURE_HEADER = "Idc-Signature"
EVENT_ID_HEADER = "Idc-Event-Id"
EVENT_TYPE_HEADER = "Idc-Event-Type"
MAX_SUBSCRIPTIONS = 10
MAX_URL_LENGTH = 2048
TEST_EVENT_TYPE = "webhook.test"

# The events a tenant can subscribe to: its orders' (idc.order.events) and its circuits'
# (idc.circuit.events).
ORDER_EVENT_TYPES: tuple[str, ...] = (
    "idc.events.v1.OrderCreated",
    "idc.events.v1.OrderApproved",
    "idc.events.v1.OrderRejected",
    "idc.events.v1.OrderCancelled",
    "idc.events.v1.OrderCompleted",
    "idc.events.v1.OrderAwaitingApproval",
)
EVENT_TYPES: tuple[str, ...] = (
    *ORDER_EVENT_TYPES,
    "idc.events.v1.CircuitActivated",
    "idc.events.v1.CircuitModified",
    "idc.events.v1.CircuitDisconnected",
    "idc.events.v1.ProvisioningFailed",
    "idc.events.v1.DriftDetected",
    "idc.events.v1.DriftCleared",
)
# Fields of those events that may leave: ids, figures and times. Free text (a router's
# failure message, a rejection's reason) and people's names (approvers, who rejected or
# cancelled) stay home, as for every event crossing the border.
BODY_FIELDS = frozenset({
    "circuitId", "orderId", "tenantId", "operation", "bandwidthMbps",
    "previousBandwidthMbps", "effectiveTime", "occurredAt", "rolledBack", "side",
    "driftedSince", "lastSeenInSyncTime", "success", "expired", "approvalExpireTime",
    "boostOrderId",
})


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets_in_force: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex>[,v1=<hex>]``: one v1 per valid secret, so a receiver that still
    knows only the previous secret verifies during a rotation."""
    parts = [f"t={timestamp}"] + [f"v1={signature(s, timestamp, body)}"
                                  for s in secrets_in_force]
    return ",".join(parts)


def verify(secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does: the timestamp is recent and one v1 matches."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for name, value in fields if name == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, value) for name, value in fields if name == "v1")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``first_s * 2**(attempt-1)`` capped at ``max_s``, for at most
    ``give_up_after_s`` from the delivery's first attempt."""

    first_s: float = 5.0
    max_s: float = 600.0
    give_up_after_s: float = 24 * 3600.0

    def delay_after(self, attempts: int) -> timedelta:
        seconds = min(self.first_s * 2 ** max(attempts - 1, 0), self.max_s)
        return timedelta(seconds=seconds)

    def gives_up(self, first_attempt_at: datetime, now: datetime) -> bool:
        return (now - first_attempt_at).total_seconds() >= self.give_up_after_s


def subscription_problems(url: str, event_types: Iterable[str], existing: int) -> dict[str, str]:
    """Field name to problem; empty when the subscription may be created."""
    problems: dict[str, str] = {}
    parts = urlsplit(url)
    if len(url) > MAX_URL_LENGTH:
        problems["url"] = f"at most {MAX_URL_LENGTH} characters"
    elif parts.scheme != "https" or not parts.hostname:
        problems["url"] = "an https:// URL with a host"
    elif parts.username or parts.password:
        problems["url"] = "credentials do not belong in the URL; verify the signature instead"
    types = list(event_types)
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if not types:
        problems["event_types"] = "at least one of " + ", ".join(EVENT_TYPES)
    elif unknown:
        problems["event_types"] = "unknown: " + ", ".join(unknown)
    if existing >= MAX_SUBSCRIPTIONS:
        problems["url"] = f"a tenant has at most {MAX_SUBSCRIPTIONS} subscriptions"
    return problems


def event_body(event_id: str, event_type: str, created: datetime,
               fields: Mapping[str, object]) -> bytes:
    """The JSON a receiver gets; the event id is stable across retries and replays."""
    data = {name: value for name, value in fields.items() if name in BODY_FIELDS}
    document = {"id": event_id, "type": event_type, "created": created.isoformat(),
                "data": data}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def wants(subscribed_at: datetime, happened_at: datetime) -> bool:
    """A subscription is sent the events that happened from its creation on: a consumer
    catching up (a new deployment, a group reset) must not deliver what it missed before
    the endpoint existed."""
    return happened_at >= subscribed_at
