"""The NETCONF counter source reads real, moving kernel counters from a real agent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devstack.counters import AGENT_REFRESH_S, CounterAgent
from services.billing.meter.domain import Reading
from services.billing.meter.source import CounterSourceError, NetconfCounterSource
from tests.integration.meter.conftest import METERED_INTERFACE, SG_ROUTER

pytestmark = pytest.mark.integration


@pytest.fixture
def source(counter_agent: CounterAgent) -> Iterator[NetconfCounterSource]:
    source = NetconfCounterSource({"sg-edge-1": counter_agent.router_access("sg-edge-1")})
    yield source
    source.close()


def settled_reading(source: NetconfCounterSource, deadline_s: float = 15.0) -> Reading:
    """A reading that includes everything sent before the call: two reads more than one
    agent refresh apart that agree (a refresh happened between them, after the call)."""
    deadline = time.monotonic() + deadline_s
    previous = source.read("sg-edge-1", [METERED_INTERFACE])[METERED_INTERFACE]
    while time.monotonic() < deadline:
        time.sleep(AGENT_REFRESH_S * 1.5)
        current = source.read("sg-edge-1", [METERED_INTERFACE])[METERED_INTERFACE]
        if (current.in_octets, current.out_octets) == (previous.in_octets, previous.out_octets):
            return current
        previous = current
    raise AssertionError(f"the counters of {METERED_INTERFACE} did not settle")


def test_counters_move_by_exactly_the_frames_sent(
    source: NetconfCounterSource, counter_agent: CounterAgent
) -> None:
    port = counter_agent.port(SG_ROUTER, METERED_INTERFACE)
    before = settled_reading(source)
    sent_in = port.send_from_customer(frame_count=250, frame_bytes=1000)
    sent_out = port.send_to_customer(frame_count=40, frame_bytes=64)
    after = settled_reading(source)
    assert after.in_octets - before.in_octets == sent_in == 250_000
    assert after.out_octets - before.out_octets == sent_out == 2_560
    assert after.read_at > before.read_at


def test_an_interface_the_router_lacks_is_absent(source: NetconfCounterSource) -> None:
    assert source.read("sg-edge-1", ["xe-9/9/9.999"]) == {}


def test_an_unconfigured_router_is_a_source_error(source: NetconfCounterSource) -> None:
    with pytest.raises(CounterSourceError, match="not in the meter's router configuration"):
        source.read("nowhere-1", [METERED_INTERFACE])
