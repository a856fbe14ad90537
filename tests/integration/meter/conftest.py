"""The counter-serving NETCONF agent for the meter's integration tests (one per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.counters import CounterAgent, start_counter_agent

#: The customer interface of the metered circuit on sg-edge-1 (openconfig naming).
METERED_INTERFACE = "xe-0/0/1.100"


@pytest.fixture(scope="session")
def counter_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CounterAgent]:
    with start_counter_agent(
        tmp_path_factory.mktemp("counter-agent"), [METERED_INTERFACE]
    ) as agent:
        yield agent
