"""From the services' protobuf messages to what the pages show (names, texts, summaries)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from idc.order.v1 import circuit_pb2, order_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from idc.type.v1 import circuit_operation_pb2, side_pb2
from services.console.domain import CircuitSummary, CompletedOrder, DeviceSync, OrderKind

TERMINAL_ORDER_STATES = frozenset({"COMPLETED", "REJECTED", "FAILED", "CANCELLED"})


def _name(enum: EnumDescriptor, value: int, prefix: str) -> str:
    found = enum.values_by_number.get(value)
    return found.name.removeprefix(prefix) if found is not None else str(value)


def order_state(value: int) -> str:
    return _name(order_pb2.OrderState.DESCRIPTOR, value, "ORDER_STATE_")


def order_type(value: int) -> str:
    return _name(order_pb2.OrderType.DESCRIPTOR, value, "ORDER_TYPE_")


def approval_state(value: int) -> str:
    return _name(order_pb2.ApprovalState.DESCRIPTOR, value, "APPROVAL_STATE_")


def circuit_state(value: int) -> str:
    return _name(circuit_pb2.CircuitState.DESCRIPTOR, value, "CIRCUIT_STATE_")


def side(value: int) -> str:
    return _name(side_pb2.Side.DESCRIPTOR, value, "SIDE_").capitalize()


def operation(value: int) -> str:
    return _name(circuit_operation_pb2.CircuitOperation.DESCRIPTOR, value, "CIRCUIT_OPERATION_")


def step(value: int) -> str:
    return _name(prov_pb.ProvisioningStep.DESCRIPTOR, value, "PROVISIONING_STEP_")


def outcome(value: int) -> str:
    return _name(prov_pb.ProvisioningOutcome.DESCRIPTOR, value, "PROVISIONING_OUTCOME_")


def when(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def to_datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def end_text(end: circuit_pb2.CircuitEnd) -> str:
    return f"{end.router_name} {end.port_name} vlan {end.vlan_id}"


def circuit_summary(circuit: circuit_pb2.Circuit) -> CircuitSummary:
    return CircuitSummary(
        id=circuit.id, tenant_id=circuit.tenant_id, state=circuit_state(circuit.state),
        a_end=end_text(circuit.a_end), z_end=end_text(circuit.z_end),
        a_router=circuit.a_end.router_name, z_router=circuit.z_end.router_name,
        bandwidth_mbps=circuit.bandwidth_mbps,
        customer_reference=circuit.customer_reference, description=circuit.description)


_KINDS = {
    order_pb2.ORDER_TYPE_NEW: OrderKind.NEW,
    order_pb2.ORDER_TYPE_CHANGE: OrderKind.CHANGE,
    order_pb2.ORDER_TYPE_DISCONNECT: OrderKind.DISCONNECT,
}


def completed_order(order: order_pb2.Order) -> CompletedOrder | None:
    kind = _KINDS.get(order.type)
    if kind is None or not order.HasField("complete_time"):
        return None
    return CompletedOrder(kind, to_datetime(order.complete_time), order.spec.bandwidth_mbps,
                          order.previous_bandwidth_mbps)


def device_sync(status: prov_pb.DeviceSyncStatus) -> DeviceSync:
    error = ""
    if status.HasField("error"):
        error = status.error.message or "the router could not be read"
    return DeviceSync(
        device_name=status.device_name, in_sync=status.in_sync,
        missing=frozenset(status.missing_circuit_ids),
        drifted=frozenset(d.circuit_id for d in status.different),
        extra=frozenset(status.extra_circuit_ids), error=error,
        differences={d.circuit_id: [(x.path, x.intended, x.actual) for x in d.differences]
                     for d in status.different})


def sync_summary(check: DeviceSync) -> str:
    """One sentence about a router's CheckSync answer."""
    if check.error:
        return f"{check.device_name}: could not be read: {check.error}"
    if check.in_sync:
        return f"{check.device_name}: in sync with the intended circuits"
    parts = []
    if check.missing:
        parts.append("missing " + ", ".join(sorted(check.missing)))
    for circuit_id, diffs in sorted(check.differences.items()):
        leaves = "; ".join(f"{'/'.join(path.split('/')[-3:])}: intended {want}, running {have}"
                           for path, want, have in diffs)
        parts.append(f"drift on {circuit_id} ({leaves})")
    if check.extra:
        parts.append("not intended: " + ", ".join(sorted(check.extra)))
    return f"{check.device_name}: out of sync: " + "; ".join(parts)


def order_event(order: order_pb2.Order) -> dict[str, object]:
    """What the live order page needs, as JSON."""
    return {
        "state": order_state(order.state),
        "terminal": order_state(order.state) in TERMINAL_ORDER_STATES,
        "approvals": [
            {"side": side(a.side), "state": approval_state(a.state), "approver": a.approver,
             "comment": a.comment}
            for a in order.approvals
        ],
        "audit": [
            {"time": when(e.time), "actor": e.actor, "from": order_state(e.from_state),
             "to": order_state(e.to_state), "reason": e.reason}
            for e in order.audit_trail
        ],
        "failure": order.failure.message,
        # The last provisioning step, e.g. "preparing since 2026-12-02 10:00:01 UTC".
        "step": (f"{order.provisioning_step} since {when(order.provisioning_step_time)}"
                 if order.provisioning_step else ""),
    }


WATCH_STATES = {
    prov_pb.SYNC_STATE_IN_SYNC: "in sync",
    prov_pb.SYNC_STATE_DRIFTED: "drifted",
    prov_pb.SYNC_STATE_UNKNOWN: "unknown",
}


def watch_label(status: prov_pb.CircuitSyncStatus) -> str:
    """One circuit end as the drift watch last saw it, e.g. ``drifted since ...``."""
    label = WATCH_STATES.get(status.state, "?")
    return f"{status.device_name}: {label} since {when(status.since)}"


def drift_banner(statuses: list[prov_pb.CircuitSyncStatus]) -> str:
    """The banner over every circuits page while any circuit drifts; empty when none."""
    drifted = sorted({s.circuit_id for s in statuses if s.state == prov_pb.SYNC_STATE_DRIFTED})
    if not drifted:
        return ""
    shown = ", ".join(drifted[:10]) + (f" and {len(drifted) - 10} more" if len(drifted) > 10
                                       else "")
    return (f"{len(drifted)} circuit(s) drifted from what was deployed: {shown}. "
            "Open a circuit to see the difference and redeploy it.")
