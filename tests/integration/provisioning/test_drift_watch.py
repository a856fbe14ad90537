"""The continuous drift watch on the devstack: a deployed circuit changed behind the
system's back with a raw NETCONF session (deleted on one router, its rate altered on the
other) is reported within about one watch interval, once per router; Redeploy (approved by
both telcos) repairs it and the next round clears it. The routers are only read by the
watch (never locked)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from ncclient.manager import Manager

from devstack.netconf import RouterFleet
from idc.events.v1 import circuit_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from services.common.netconf import open_session
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.rendering import Renderer
from tests.integration.provisioning.helpers import circuit, device_of, wait_for
from tests.integration.provisioning.stack import Stack, launched

pytestmark = pytest.mark.integration

VLANS = itertools.count(3760)
INTERVAL_S = 2
DETECTED, CLEARED = (circuit_pb2.DriftDetected,), (circuit_pb2.DriftCleared,)


@pytest.fixture(scope="module")
def stack(
    routers: RouterFleet, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with launched(
        kafka_bootstrap,
        tmp_path_factory.mktemp("drift-watch"),
        routers,
        IDC_PROVISIONING_CONFIRM_TIMEOUT_S="30",
        IDC_PROVISIONING_STEP_DEADLINE_S="20",
        IDC_PROVISIONING_DRIFT_INTERVAL_S=str(INTERVAL_S),
    ) as s:
        yield s


def statuses(stack: Stack, circuit_id: str) -> dict[str, pb.CircuitSyncStatus]:
    reply = stack.stub().ListSyncStatus(
        pb.ListSyncStatusRequest(circuit_id=circuit_id), metadata=stack.metadata()
    )
    assert reply.interval_seconds == INTERVAL_S
    return {s.device_name: s for s in reply.statuses}


def all_in(stack: Stack, circuit_id: str, state: int) -> dict[str, pb.CircuitSyncStatus] | None:
    found = statuses(stack, circuit_id)
    return found if len(found) == 2 and {s.state for s in found.values()} == {state} else None


def behind_the_back(stack: Stack, router: str, config: str) -> None:
    """One change committed on ``router`` with a plain ncclient session of the test's own."""
    device = device_of(next(r for r in stack.routers if r.name == router))
    m: Manager = open_session(
        host=device.host, port=device.port, username=device.username,
        key_path=device.key_path, known_hosts_path=device.known_hosts_path, timeout_s=10,
    )
    try:
        with m.locked("candidate"):
            m.edit_config(target="candidate", config=config)
            m.commit()
    finally:
        m.close_session()


def test_a_change_behind_the_back_is_reported_then_cleared_by_redeploy(stack: Stack) -> None:
    params = circuit(stack.vlan(next(VLANS)), mbps=200)
    stack.approve(Operation.CREATE, params)
    assert isinstance(stack.outcome(params.circuit_id)[0], circuit_pb2.CircuitActivated)
    seen = wait_for("both ends in sync", lambda: all_in(stack, params.circuit_id,
                                                        pb.SYNC_STATE_IN_SYNC))
    assert all(s.HasField("last_seen_in_sync_time") for s in seen.values())

    renderer = Renderer()
    altered = circuit(params.a_end.vlan_id, mbps=9, circuit_id=params.circuit_id)
    behind_the_back(stack, "sg-edge-1", renderer.render(
        "openconfig", Operation.MODIFY, circuit_end(altered, Side.SINGAPORE)).content)
    behind_the_back(stack, "cq-edge-1", renderer.render(
        "cq-vendor", Operation.DELETE, circuit_end(params, Side.CHONGQING)).content)
    changed = time.monotonic()

    events = stack.outcome(params.circuit_id, DETECTED, count=2, timeout=30)
    took = time.monotonic() - changed
    assert took < 3 * INTERVAL_S + 10, f"reported after {took:.1f} s"
    kinds = {e.router_name: e.kind for e in events if isinstance(e, circuit_pb2.DriftDetected)}
    assert kinds == {"sg-edge-1": circuit_pb2.DRIFT_KIND_DIFFERENT,
                     "cq-edge-1": circuit_pb2.DRIFT_KIND_MISSING}
    drifted = wait_for("both ends drifted", lambda: all_in(stack, params.circuit_id,
                                                           pb.SYNC_STATE_DRIFTED))
    assert "absent from the router" in drifted["cq-edge-1"].detail
    assert "9000000 instead of 200000000" in drifted["sg-edge-1"].detail
    assert all(s.drift_reported and s.HasField("last_seen_in_sync_time")
               for s in drifted.values())
    first_check = drifted["cq-edge-1"].check_time.ToDatetime()
    wait_for("two more rounds", lambda: (
        statuses(stack, params.circuit_id)["cq-edge-1"].check_time.ToDatetime() - first_check
    ).total_seconds() >= 2 * INTERVAL_S, timeout=30)
    stack.poll_events()
    assert len(stack.events_for(params.circuit_id, DETECTED)) == 2, "published once per drift"
    not_in_sync = stack.stub().ListSyncStatus(
        pb.ListSyncStatusRequest(not_in_sync_only=True), metadata=stack.metadata())
    assert {s.circuit_id for s in not_in_sync.statuses} == {params.circuit_id}

    assert stack.repair(params.circuit_id).saga_id  # requested, then approved by four eyes
    stack.outcome(params.circuit_id, (circuit_pb2.CircuitModified,), timeout=60)
    cleared = stack.outcome(params.circuit_id, CLEARED, count=2, timeout=30)
    assert {e.router_name for e in cleared} == {"sg-edge-1", "cq-edge-1"}  # type: ignore[attr-defined]
    wait_for("both ends in sync again", lambda: all_in(stack, params.circuit_id,
                                                       pb.SYNC_STATE_IN_SYNC))
    stack.poll_events()
    assert len(stack.events_for(params.circuit_id, DETECTED)) == 2
    assert len(stack.events_for(params.circuit_id, CLEARED)) == 2


def test_a_paused_router_is_unknown_never_drift(stack: Stack, routers: RouterFleet) -> None:
    params = circuit(stack.vlan(next(VLANS)), mbps=100)
    stack.approve(Operation.CREATE, params)
    assert isinstance(stack.outcome(params.circuit_id)[0], circuit_pb2.CircuitActivated)
    wait_for("both ends in sync", lambda: all_in(stack, params.circuit_id,
                                                 pb.SYNC_STATE_IN_SYNC))
    with routers.paused("sg-edge-1"):
        # One read waits out its bounds (connect 15 s), then the round reports.
        unknown = wait_for("sg-edge-1 unknown", lambda: (
            found if (found := statuses(stack, params.circuit_id))["sg-edge-1"].state
            == pb.SYNC_STATE_UNKNOWN else None), timeout=60)
        assert "router not read" in unknown["sg-edge-1"].detail
        assert unknown["cq-edge-1"].state == pb.SYNC_STATE_IN_SYNC
        assert not unknown["sg-edge-1"].drift_reported
    wait_for("sg-edge-1 in sync again", lambda: all_in(stack, params.circuit_id,
                                                       pb.SYNC_STATE_IN_SYNC), timeout=60)
    stack.poll_events()
    assert stack.events_for(params.circuit_id, DETECTED + CLEARED) == []
