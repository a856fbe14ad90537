"""Scale-out correctness: two order APIs on one PostgreSQL database, two provisioning
coordinators (one database, one consumer group) and two agents per telco (one database and
one consumer group per telco), on a real broker and real routers.

Phase one places 60 orders at once across both order APIs (the 1G port pair fills up),
approves them from both telcos and checks the invariants; phase two places 40 more (the
channel fills up), SIGKILLs one coordinator and the agent holding the Singapore router's
lease while their sagas are in flight, and checks the same invariants on what the survivors
finish (the other Singapore agent takes the router over). 100 orders in all.

Invariants, after each phase:
* capacity: the orders admitted never exceed the channel or any port, and admission is not
  over-cautious (with equal bandwidths, exactly as many orders as fit are admitted);
* every order reaches a final state within a deadline (COMPLETED, or FAILED with a reason);
* both routers' running configuration holds each completed circuit's sub-interface exactly
  once, and nothing else (no duplicate, nothing lost, nothing left by a failed order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from idc.order.v1 import order_pb2
from tests.fixtures.database import require_postgres
from tests.integration.scale_out_stack import (
    CQ_PORTS,
    PORT_SPEED_MBPS,
    SG_PORTS,
    Placed,
    ScaleOutStack,
    scale_out_stack,
)
from tools.prereqs import postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANNEL_CAPACITY_MBPS = 14_000
BANDWIDTH_MBPS = 200
PHASE_ONE_ORDERS = 60
PHASE_TWO_ORDERS = 40
# Generous for a loaded two-core machine; the wait ends as soon as the work is done.
APPROVAL_DEADLINE_S = 90.0
FINISH_DEADLINE_S = 120.0
HOLDING = {order_pb2.ORDER_STATE_COMPLETED}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOutStack]:
    admin_url = postgres_url()
    require_postgres(admin_url)
    work: Path = tmp_path_factory.mktemp("scale-out")
    with scale_out_stack(work, admin_url, CHANNEL_CAPACITY_MBPS) as running:
        yield running


class Ledger:
    """What the test placed and what came of it, across phases."""

    def __init__(self) -> None:
        self.placed: list[Placed] = []
        self.final: dict[str, order_pb2.Order] = {}

    def holding(self) -> list[order_pb2.Order]:
        return [o for o in self.final.values() if o.state in HOLDING]


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


def expected_admissions(ledger: Ledger, pairs: list[int]) -> int:
    """How many of these equal-bandwidth orders fit next to what is already held: each
    fits its port pair's room, and all of them the channel's."""
    held = Counter[str]()
    for order in ledger.holding():
        held[order.spec.a_end_port_id] += order.spec.bandwidth_mbps
        held[order.spec.z_end_port_id] += order.spec.bandwidth_mbps
    channel_room = CHANNEL_CAPACITY_MBPS - sum(o.spec.bandwidth_mbps for o in ledger.holding())
    fitting = 0
    for pair, wanted in Counter(pairs).items():
        room = min(PORT_SPEED_MBPS[p] - held[p] for p in (SG_PORTS[pair], CQ_PORTS[pair]))
        fitting += min(wanted, room // BANDWIDTH_MBPS)
    return min(fitting, channel_room // BANDWIDTH_MBPS)


def place_phase(stack: ScaleOutStack, ledger: Ledger, count: int) -> list[Placed]:
    pairs = [i % 4 for i in range(count)]
    expected = expected_admissions(ledger, pairs)
    placed = stack.place_all([stack.spec(pair, BANDWIDTH_MBPS) for pair in pairs])
    ledger.placed += placed
    refusals = [p.refusal for p in placed if p.refusal is not None]
    assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED and message
               for code, message in refusals), refusals
    admitted = [p.order for p in placed if p.order is not None]
    assert len(admitted) == expected, (
        f"{len(admitted)} of {count} admitted where {expected} fit; refusals: {refusals}")
    assert refusals, "the phase must exercise admission"
    check_capacity([*ledger.holding(), *admitted])
    return placed


def check_capacity(holding: list[order_pb2.Order]) -> None:
    """Never oversold: the channel and every port carry at most their capacity."""
    assert sum(o.spec.bandwidth_mbps for o in holding) <= CHANNEL_CAPACITY_MBPS
    per_port = Counter[str]()
    for order in holding:
        per_port[order.spec.a_end_port_id] += order.spec.bandwidth_mbps
        per_port[order.spec.z_end_port_id] += order.spec.bandwidth_mbps
    oversold = {p: mbps for p, mbps in per_port.items() if mbps > PORT_SPEED_MBPS[p]}
    assert not oversold, oversold


def finish_phase(stack: ScaleOutStack, ledger: Ledger, placed: list[Placed],
                 approved_already: frozenset[str] = frozenset()) -> dict[str, order_pb2.Order]:
    ids = {p.order.id for p in placed if p.order is not None}
    stack.approve_all(ids - approved_already, APPROVAL_DEADLINE_S)
    final = stack.wait_final(ids, FINISH_DEADLINE_S)
    ledger.final.update(final)
    unexplained = {i: order_pb2.OrderState.Name(o.state) for i, o in final.items()
                   if o.state != order_pb2.ORDER_STATE_COMPLETED and not o.failure.message}
    assert not unexplained, f"orders ended without a reason: {unexplained}"
    check_capacity(ledger.holding())
    return final


def check_routers(stack: ScaleOutStack, ledger: Ledger) -> None:
    """Each completed circuit's sub-interface exactly once on each router, nothing else."""
    running = stack.subinterfaces()
    for router, ends in (("sg-edge-1", "a"), ("cq-edge-1", "z")):
        want = Counter[tuple[str, int, str]]()
        for order in ledger.holding():
            port = getattr(order.spec, f"{ends}_end_port_id")
            vlan = getattr(order.spec, f"{ends}_end_vlan_id")
            want[(port.split(":", 1)[1], vlan, order.circuit_id)] += 1
        have = running[router]
        duplicated = {k: n for k, n in have.items() if n > 1}
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        assert not duplicated and not missing and not extra, (
            f"{router}: duplicated {duplicated}, missing {missing}, extra {extra}")


@pytest.fixture(scope="module")
def phase_one(stack: ScaleOutStack, ledger: Ledger) -> dict[str, order_pb2.Order]:
    """60 orders placed at once, approved by both telcos, every one final with a reason."""
    placed = place_phase(stack, ledger, PHASE_ONE_ORDERS)
    return finish_phase(stack, ledger, placed)


@pytest.fixture(scope="module")
def phase_two(
    stack: ScaleOutStack, ledger: Ledger, phase_one: dict[str, order_pb2.Order]
) -> dict[str, order_pb2.Order]:
    """40 more orders; a coordinator and an agent SIGKILLed while the first half's sagas
    run; the survivors bring every order to a final state with a reason."""
    placed = place_phase(stack, ledger, PHASE_TWO_ORDERS)
    admitted = [p.order for p in placed if p.order is not None]
    first_half = {o.id for o in admitted[: len(admitted) // 2]}
    stack.approve_all(first_half, APPROVAL_DEADLINE_S)
    # Their sagas are now running: take a coordinator and the agent driving the Singapore
    # router away without warning.
    stack.kill("coordinator-1")
    driver = stack.router_driver("sg", "sg-edge-1")
    stack.kill(driver)
    final = finish_phase(stack, ledger, placed, approved_already=frozenset(first_half))
    assert stack.router_driver("sg", "sg-edge-1") != driver  # its peer took the router over
    return final


def not_completed(final: dict[str, order_pb2.Order]) -> dict[str, str]:
    return {i: o.failure.message for i, o in final.items()
            if o.state != order_pb2.ORDER_STATE_COMPLETED}


def test_phase_one_admission_never_oversells_and_no_order_is_stuck(
    phase_one: dict[str, order_pb2.Order]
) -> None:
    # place_phase and finish_phase check capacity, exact admissions, final states, reasons.
    assert phase_one


def test_phase_one_every_admitted_circuit_is_built_once_on_each_router(
    stack: ScaleOutStack, ledger: Ledger, phase_one: dict[str, order_pb2.Order]
) -> None:
    failed = not_completed(phase_one)
    # Nothing was broken in this phase: every admitted order is built.
    assert not failed, f"{len(failed)} of {len(phase_one)} not completed: {failed}"
    check_routers(stack, ledger)


def test_phase_two_survivors_bring_every_order_to_an_end_after_sigkill(
    phase_two: dict[str, order_pb2.Order]
) -> None:
    # place_phase and finish_phase check capacity, exact admissions, final states, reasons.
    assert phase_two


def test_phase_two_survivors_build_each_circuit_once_after_sigkill(
    stack: ScaleOutStack, ledger: Ledger, phase_two: dict[str, order_pb2.Order]
) -> None:
    failed = not_completed(phase_two)
    assert not failed, f"{len(failed)} of {len(phase_two)} not completed: {failed}"
    check_routers(stack, ledger)
