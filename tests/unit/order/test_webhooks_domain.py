"""Webhook rules: the signature a receiver checks, the retry schedule, subscriptions."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.order.webhooks import domain

BODY = b'{"id":"e-1"}'


def test_a_signature_verifies_with_its_secret_and_fails_with_another() -> None:
    header = domain.signature_header(["s-new"], 1_700_000_000, BODY)
    assert header.startswith("t=1700000000,v1=")
    assert domain.verify("s-new", header, BODY, now=1_700_000_010)
    assert not domain.verify("s-other", header, BODY, now=1_700_000_010)


def test_a_changed_body_or_an_old_timestamp_does_not_verify() -> None:
    header = domain.signature_header(["s"], 1_700_000_000, BODY)
    assert not domain.verify("s", header, BODY + b" ", now=1_700_000_000)
    assert not domain.verify("s", header, BODY, now=1_700_000_000 + 301)
    assert not domain.verify("s", "v1=abc", BODY, now=1_700_000_000)


def test_during_a_rotation_both_secrets_verify() -> None:
    header = domain.signature_header(["s-new", "s-old"], 1_700_000_000, BODY)
    assert header.count("v1=") == 2
    assert domain.verify("s-new", header, BODY, now=1_700_000_000)
    assert domain.verify("s-old", header, BODY, now=1_700_000_000)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # What README's recipe computes, so a receiver written from it keeps verifying.
    assert domain.signature("k", 1, b"x") == hmac.new(b"k", b"1.x", hashlib.sha256).hexdigest()


def test_backoff_doubles_up_to_the_cap_and_gives_up_after_the_window() -> None:
    policy = domain.RetryPolicy(first_s=5, max_s=60, give_up_after_s=3600)
    assert [policy.delay_after(n).total_seconds() for n in range(1, 7)] == [
        5, 10, 20, 40, 60, 60]
    start = datetime(2026, 12, 4, tzinfo=UTC)
    assert not policy.gives_up(start, start + timedelta(seconds=3599))
    assert policy.gives_up(start, start + timedelta(seconds=3600))


def test_a_subscription_needs_https_known_event_types_and_room() -> None:
    ok = domain.subscription_problems("https://hooks.example/x", [domain.EVENT_TYPES[0]], 0)
    assert ok == {}
    assert "url" in domain.subscription_problems("http://hooks.example/x",
                                                 [domain.EVENT_TYPES[0]], 0)
    assert "url" in domain.subscription_problems("https://u:p@hooks.example/x",
                                                 [domain.EVENT_TYPES[0]], 0)
    assert "event_types" in domain.subscription_problems("https://h.example", [], 0)
    assert "event_types" in domain.subscription_problems("https://h.example", ["nope"], 0)
    full = domain.subscription_problems("https://h.example", [domain.EVENT_TYPES[0]],
                                        domain.MAX_SUBSCRIPTIONS)
    assert "at most 10" in full["url"]


def test_the_body_keeps_ids_and_figures_and_drops_free_text() -> None:
    body = json.loads(domain.event_body(
        "e-1", "idc.events.v1.ProvisioningFailed", datetime(2026, 12, 4, tzinfo=UTC),
        {"circuitId": "c-1", "tenantId": "t-1", "message": "router said: call Alice",
         "failures": [{"error": "x"}]}))
    assert body == {"id": "e-1", "type": "idc.events.v1.ProvisioningFailed",
                    "created": "2026-12-04T00:00:00+00:00",
                    "data": {"circuitId": "c-1", "tenantId": "t-1"}}


def test_the_readmes_receiver_recipe_verifies_what_the_sender_signs() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    recipe = readme.split("A receiver checks it like this:", 1)[1]
    scope: dict[str, Any] = {}
    exec(recipe.split("```python\n", 1)[1].split("```", 1)[0], scope)  # the README's own code
    verify = scope["verify"]
    now = int(time.time())
    rotating = domain.signature_header(["s-new", "s-old"], now, BODY)
    assert verify("s-new", rotating, BODY) and verify("s-old", rotating, BODY)
    assert not verify("s-other", rotating, BODY)
    assert not verify("s-new", rotating, BODY + b" ")
    assert not verify("s-new", domain.signature_header(["s-new"], now - 301, BODY), BODY)
    for malformed in ("", "v1=abc", "t=x,v1=abc", f"t={now},t={now},v1=abc", "garbage"):
        assert not verify("s-new", malformed, BODY), malformed
