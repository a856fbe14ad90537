"""The saga coordinator: order events and agent replies in, commands and circuit events out.

The decisions are in :mod:`services.provisioning.domain.saga`; this module loads and stores saga
state, turns decisions into ProvisioningCommands (through the outbox, in the same
transaction as the state change) and publishes the outcome.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2
from google.protobuf.message import Message
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, common_pb2, order_pb2, provisioning_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as ops_pb2
from idc.type.v1 import circuit_operation_pb2, router_payload_pb2
from services.common.errors import DomainError
from services.common.events import Envelope, EventRegistry, outbox
from services.common.grpc_server import Worker
from services.common.timestamps import to_timestamp as timestamp
from services.provisioning import metrics
from services.provisioning.crashpoints import COORDINATOR_AFTER_DECISION, crash_point
from services.provisioning.domain.circuits import (
    TELCO_OF_SIDE,
    CircuitEnd,
    Operation,
    Side,
    circuit_end,
)
from services.provisioning.domain.faults import RouterFailure, RouterFault
from services.provisioning.domain.observe import (
    Leaves,
    SubinterfaceKey,
    differences,
    intended_leaves,
    running_subinterfaces,
)
from services.provisioning.domain.saga import (
    Action,
    Held,
    Saga,
    Send,
    Step,
    extended_deadline,
    held_of,
    repair_operations,
)
from services.provisioning.inventory import Device, Inventory
from services.provisioning.rendering import Renderer
from services.provisioning.repairs import supersede_saga
from services.provisioning.tables import IntendedCircuit, LogEntry, PlannedOrder, SagaRow, utcnow

log = logging.getLogger(__name__)

REGISTRY = EventRegistry(
    [
        order_pb2.OrderCreated,
        order_pb2.OrderApproved,
        order_pb2.OrderRejected,
        order_pb2.OrderCancelled,
        order_pb2.OrderCompleted,
        order_pb2.OrderAwaitingApproval,  # not the coordinator's: known, so not dead-lettered
        provisioning_pb2.ProvisioningCommand,
        provisioning_pb2.ProvisioningReply,
    ]
)
ACTION_PROTO = {
    Action.PREPARE: provisioning_pb2.PROVISIONING_ACTION_PREPARE,
    Action.CONFIRM: provisioning_pb2.PROVISIONING_ACTION_CONFIRM,
    Action.ROLLBACK: provisioning_pb2.PROVISIONING_ACTION_ROLLBACK,
}
ACTION_OF_PROTO = {v: k for k, v in ACTION_PROTO.items()}
FINISHED_STEPS = (Step.DONE.value, Step.FAILED.value, Step.REPLAN.value)
# The actors of log entries no principal caused directly.
SYSTEM_COORDINATOR = "system:coordinator"
SYSTEM_WATCHDOG = "system:watchdog"


def unapproved_sides(approved: order_pb2.OrderApproved) -> list[Side]:
    """Sides whose payload the event binds to no approved hash."""
    hashed = {a.side for a in approved.approvals if a.payload_sha256}
    return [side for side in (Side.SINGAPORE, Side.CHONGQING) if side.value not in hashed]


def saga_actor(approved: order_pb2.OrderApproved) -> str:
    """Who caused a saga: its approvers' principal ids, Singapore first."""
    return ",".join(
        a.approver for a in sorted(approved.approvals, key=lambda a: a.side) if a.approver
    )


@dataclass(frozen=True)
class Topics:
    order_events: str
    commands: dict[Side, str]
    replies: str
    circuit_events: str


@dataclass(frozen=True)
class SagaTimings:
    confirm_timeout_s: int = 120
    # How long the coordinator waits for one reply before deciding without it.
    step_deadline_s: float = 30.0
    # How long after approval a round that failed for a passing reason is retried, and
    # the first wait between rounds (doubling each round).
    retry_window_s: float = 600.0
    retry_backoff_s: float = 5.0

    @property
    def step_wait_max_s(self) -> float:
        """How long a step may wait for agents that are alive but working through a queue
        (see saga.extended_deadline): past the confirm timeout a prepare is gone anyway."""
        return max(self.step_deadline_s, float(self.confirm_timeout_s))


class Coordinator:
    def __init__(
        self,
        inventory: Inventory,
        renderer: Renderer,
        topics: Topics,
        timings: SagaTimings,
        read_running: Callable[[Device], str],
    ) -> None:
        self._inventory = inventory
        self._renderer = renderer
        self._topics = topics
        self._timings = timings
        self._read_running = read_running
        # When each router's agent was last heard from (any reply), for the deadlines. Per
        # process: a coordinator that has heard nothing yet (just started) keeps the plain
        # step deadline.
        self._last_heard: dict[str, datetime] = {}
        self._started = utcnow()

    # -- consumer handler ---------------------------------------------------------------

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        if isinstance(event, order_pb2.OrderCreated):
            self.plan(session, event)
        elif isinstance(event, order_pb2.OrderApproved):
            unapproved = unapproved_sides(event)
            if unapproved:
                self._refuse_unapproved(session, event, unapproved)
            else:
                self.start(session, event)
        elif isinstance(event, provisioning_pb2.ProvisioningReply):
            self.on_reply(session, event)

    # -- plan -----------------------------------------------------------------------

    def payloads(
        self, operation: Operation | Mapping[Side, Operation], circuit: common_pb2.CircuitParameters
    ) -> list[router_payload_pb2.RouterPayload]:
        """Each router's payload (``operation`` for both, or per side), Singapore first;
        raises DomainError when not renderable."""
        found = []
        for side in (Side.SINGAPORE, Side.CHONGQING):
            device, end = self._device_end(circuit, side)
            rendered = operation if isinstance(operation, Operation) else operation[side]
            found.append(
                self._renderer.router_payload(device.platform, device.telco, side, rendered, end)
            )
        return found

    def _device_end(
        self, circuit: common_pb2.CircuitParameters, side: Side
    ) -> tuple[Device, CircuitEnd]:
        end = circuit_end(circuit, side)
        device = self._inventory.get(end.router_name)
        if device is None or device.side is not side:
            raise DomainError(f"router {end.router_name!r} is not a {side.name} router")
        if device.sandbox != circuit.sandbox:  # a sandbox circuit never on a real router
            kind = "a sandbox" if circuit.sandbox else "a real"
            raise DomainError(f"router {device.name} is {'' if device.sandbox else 'not '}"
                              f"a sandbox router; circuit {circuit.circuit_id} is {kind} one")
        return device, end

    def repair_operations(self, circuit: common_pb2.CircuitParameters) -> dict[Side, Operation]:
        """What a redeploy of ``circuit`` sends each router, from one read of its running
        configuration now (see saga.repair_operations); raises RouterFailure when a router
        cannot be read."""
        present = {}
        for side in (Side.SINGAPORE, Side.CHONGQING):
            device, end = self._device_end(circuit, side)
            running = running_subinterfaces(device.platform, self._read_running(device))
            present[side] = (end.interface, end.vlan) in running
        return repair_operations(present)

    def plan(self, session: Session, event: order_pb2.OrderCreated) -> None:
        self._publish_plan(session, event, provisioning_pb2.ProvisioningPlanned(), {})

    def _publish_plan(
        self,
        session: Session,
        event: order_pb2.OrderCreated,
        planned: provisioning_pb2.ProvisioningPlanned,
        agent_sha256: dict[Side, str],
    ) -> None:
        """Render both payloads into ``planned``, store the plan (DryRun by order) and
        publish it. ``agent_sha256``: what agents rendered for the order, if known; a plan
        that disagrees with them could never pass their check, so it carries an error."""
        planned.occurred_at.CopyFrom(timestamp(utcnow()))
        planned.order_id = event.order_id
        planned.circuit_id = event.circuit.circuit_id
        planned.operation = event.operation
        try:
            planned.payloads.extend(
                self.payloads(Operation.from_proto(event.operation), event.circuit)
            )
        except DomainError as exc:
            planned.error = exc.message
        disagreeing = [
            f"{payload.router_name}'s agent rendered {agent_sha256[side]}, "
            f"the coordinator {payload.sha256}"
            for payload in planned.payloads
            if agent_sha256.get(side := Side(payload.side), payload.sha256) != payload.sha256
        ]
        if disagreeing:
            planned.error = "; ".join(disagreeing) + " (their template sets differ)"
        session.merge(
            PlannedOrder(
                order_id=event.order_id,
                circuit_id=event.circuit.circuit_id,
                operation=event.operation,
                created=event.SerializeToString(),
            )
        )
        outbox.add(session, self._topics.circuit_events, event.circuit.circuit_id, planned)

    # -- saga -------------------------------------------------------------------------

    def start(
        self,
        session: Session,
        event: order_pb2.OrderApproved,
        operations: Mapping[Side, Operation] | None = None,
    ) -> str:
        """Start the saga of an approved order (or a redeploy: ``operations`` per side when
        a side renders another operation than the event's)."""
        saga_id = str(uuid.uuid4())
        saga = Saga(
            retry_until=(utcnow() + timedelta(seconds=self._timings.retry_window_s)).isoformat()
        )
        for side, operation in (operations or {}).items():
            if operation.value != event.operation:
                saga.side(side).operation = operation.value
        row = SagaRow(
            saga_id=saga_id,
            circuit_id=event.circuit.circuit_id,
            order_id=event.order_id,
            operation=event.operation,
            step=saga.step.value,
            state={},
            approved=event.SerializeToString(),
        )
        session.add(row)
        self._apply(session, row, saga, event, saga.start())
        return saga_id

    def _refuse_unapproved(
        self, session: Session, event: order_pb2.OrderApproved, sides: list[Side]
    ) -> None:
        """No saga for an approval that does not bind every router's payload to a hash
        (four eyes): ProvisioningFailed, nothing sent."""
        message = (
            f"not approved for {', '.join(s.name.lower() for s in sides)}: every router "
            "change needs its telco's approval of the payload hash; nothing was sent"
        )
        circuit = event.circuit
        session.add(
            LogEntry(
                order_id=event.order_id,
                circuit_id=circuit.circuit_id,
                operation=event.operation,
                step=ops_pb2.PROVISIONING_STEP_VERIFY,
                router_name="",
                side=0,
                outcome=ops_pb2.PROVISIONING_OUTCOME_FAILED,
                message=message,
                actor=SYSTEM_COORDINATOR,
            )
        )
        modify = Operation.from_proto(event.operation) is Operation.MODIFY
        remains = event.previous_circuit if modify else circuit
        create = Operation.from_proto(event.operation) is Operation.CREATE
        failed = circuit_pb2.ProvisioningFailed(
            occurred_at=timestamp(utcnow()),
            circuit_id=circuit.circuit_id,
            order_id=event.order_id,
            tenant_id=circuit.tenant_id,
            circuit=remains,
            price=event.price,
            effective_time=timestamp(utcnow()),
            operation=event.operation,
            bandwidth_mbps=0 if create else remains.bandwidth_mbps,
            message=message,
            rolled_back=True,
        )
        outbox.add(session, self._topics.circuit_events, circuit.circuit_id, failed)

    def on_reply(self, session: Session, reply: provisioning_pb2.ProvisioningReply) -> None:
        self._last_heard[reply.router_name] = utcnow()
        row = session.scalars(
            select(SagaRow).where(SagaRow.saga_id == reply.saga_id).with_for_update()
        ).first()
        if row is None:
            log.info("reply for unknown saga %s ignored", reply.saga_id)
            return
        saga = Saga.from_json(row.state)
        side = Side.from_proto(reply.side)
        action = ACTION_OF_PROTO[reply.action]
        if saga.finished or not saga.expects(side, action, reply.command_event_id):
            log.info("stale %s reply for saga %s ignored", action.name, reply.saga_id)
            return
        fault = RouterFault.from_proto(reply.error) if reply.HasField("error") else None
        approved = order_pb2.OrderApproved()
        approved.ParseFromString(row.approved)
        deciding = saga.step is Step.PREPARING
        sends = saga.on_reply(
            side,
            action,
            reply.success,
            persist_id=reply.persist_id,
            fault=fault,
            rendered_sha256=reply.payload_sha256,
            now=utcnow(),
        )
        self._apply(session, row, saga, approved, sends)
        if deciding and saga.step is Step.CONFIRMING:
            circuit_id = reply.circuit_id
            sa_event.listen(
                session,
                "after_commit",
                lambda _s: crash_point(COORDINATOR_AFTER_DECISION, circuit_id),
                once=True,
            )

    # -- recovery -----------------------------------------------------------------------

    def recover(self, factory: sessionmaker[Session]) -> int:
        """At start, before any reply is consumed: drive every unfinished saga on from both
        routers' running configuration (see Saga.recover); returns how many were driven.
        Each router is read once; a saga whose routers cannot be read now is left to its
        deadline."""
        with factory() as session:
            unfinished = list(
                session.scalars(select(SagaRow).where(SagaRow.step.not_in(FINISHED_STEPS)))
            )
        cache: dict[str, dict[SubinterfaceKey, Leaves] | None] = {}
        driven = 0
        for found in unfinished:
            approved = order_pb2.OrderApproved()
            approved.ParseFromString(found.approved)
            carries = self._carries(approved, cache)
            if carries is None:
                log.warning(
                    "saga %s: routers not readable at start; left to its deadline", found.saga_id
                )
                continue
            with factory() as session, session.begin():
                row = session.get(SagaRow, found.saga_id)
                if row is None:
                    continue
                saga = Saga.from_json(row.state)
                sends = saga.recover(carries)
                routers = ", ".join(
                    f"{side.name.lower()} {'carries' if c else 'lacks'} the target state"
                    for side, c in carries.items()
                )
                self._log_saga(
                    session,
                    row,
                    approved,
                    SYSTEM_COORDINATOR,
                    ops_pb2.PROVISIONING_OUTCOME_PENDING,
                    f"recovered at start in step {row.step}: {routers}; sent: {_sent(sends)}",
                )
                self._apply(session, row, saga, approved, sends)
            driven += 1
        return driven

    def _carries(
        self,
        approved: order_pb2.OrderApproved,
        cache: dict[str, dict[SubinterfaceKey, Leaves] | None],
    ) -> dict[Side, bool] | None:
        """Per side: whether the router's running configuration is the saga's target; None
        when a router cannot be read (``cache`` holds each router's read, or None)."""
        operation = Operation.from_proto(approved.operation)
        found = {}
        for side in (Side.SINGAPORE, Side.CHONGQING):
            end = circuit_end(approved.circuit, side)
            device = self._inventory.get(end.router_name)
            if device is None:
                return None
            if device.name not in cache:
                try:
                    cache[device.name] = running_subinterfaces(
                        device.platform, self._read_running(device)
                    )
                except RouterFailure as exc:
                    log.warning("recovery cannot read %s: %s", device.name, exc)
                    cache[device.name] = None
            running = cache[device.name]
            if running is None:
                return None
            target = (
                None if operation is Operation.DELETE else intended_leaves(device.platform, end)
            )
            found[side] = not differences(target, running.get((end.interface, end.vlan)))
        return found

    # -- the watchdog's reads -------------------------------------------------------------

    def silent_since(self, router_name: str) -> datetime:
        """Since when this process has heard nothing from the router's agent."""
        return self._last_heard.get(router_name, self._started)

    def held(self, approved: order_pb2.OrderApproved, saga: Saga, side: Side, running: str) -> Held:
        """What the router's ``running`` configuration holds of the saga's circuit end."""
        end = circuit_end(approved.circuit, side)
        device = self._inventory.get(end.router_name)
        if device is None:
            return Held.OTHER
        actual = running_subinterfaces(device.platform, running).get((end.interface, end.vlan))
        operation = Operation(saga.side(side).operation or approved.operation)
        target = None if operation is Operation.DELETE else intended_leaves(device.platform, end)
        if approved.HasField("previous_circuit") and operation is Operation.MODIFY:
            previous_end = circuit_end(approved.previous_circuit, side)
            return held_of(actual, target, intended_leaves(device.platform, previous_end))
        if operation is Operation.DELETE:
            return held_of(actual, target, intended_leaves(device.platform, end))
        # A CREATE's previous state is no sub-interface; a redeploy's MODIFY does not know it.
        return held_of(actual, target, None, known=operation is Operation.CREATE)

    def on_router_read(self, session: Session, row: SagaRow, side: Side, running: str) -> bool:
        """Settle what ``side`` owes the saga from its router's running configuration, read
        with no commit pending while its agent was silent (Saga.on_router_read); whether
        the saga moved."""
        saga = Saga.from_json(row.state)
        approved = order_pb2.OrderApproved()
        approved.ParseFromString(row.approved)
        held = self.held(approved, saga, side, running)
        before = saga.to_json()
        sends = saga.on_router_read(side, held, utcnow())
        if saga.to_json() == before:
            return False
        self._log_saga(
            session,
            row,
            approved,
            SYSTEM_WATCHDOG,
            ops_pb2.PROVISIONING_OUTCOME_PENDING,
            f"{side.name.lower()}'s agent silent past the longest a prepare can live; its "
            f"router holds the {held.name.lower()} state (read from running, no commit "
            f"pending): settled; sent: {_sent(sends)}",
        )
        self._apply(session, row, saga, approved, sends)
        return True

    def on_deadline(self, session: Session, row: SagaRow) -> None:
        saga = Saga.from_json(row.state)
        approved = order_pb2.OrderApproved()
        approved.ParseFromString(row.approved)
        if saga.step is not Step.RETRY_WAIT:
            ends = {Side.SINGAPORE: approved.circuit.a_end, Side.CHONGQING: approved.circuit.z_end}
            sent_at = (
                row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
            )
            extended = extended_deadline(
                sent_at,
                utcnow(),
                [self._last_heard.get(ends[side].router_name) for side in saga.awaited()],
                self._timings.step_deadline_s,
                self._timings.step_wait_max_s,
            )
            if extended is not None:
                row.deadline = extended
                return
        self._apply(session, row, saga, approved, saga.on_deadline())

    def _apply(
        self,
        session: Session,
        row: SagaRow,
        saga: Saga,
        approved: order_pb2.OrderApproved,
        sends: list[Send],
    ) -> None:
        now = utcnow()
        for send in sends:
            operation = saga.side(send.side).operation or approved.operation
            command = self._command(row.saga_id, approved, send, operation, now)
            added = outbox.add(
                session, self._topics.commands[send.side], approved.circuit.circuit_id, command
            )
            saga.side(send.side).command_id = added.event_id
            if not (send.again and saga.side(send.side).sent_at):
                saga.side(send.side).sent_at = now.isoformat()
        waiting_to_retry = saga.step is Step.RETRY_WAIT and row.step != Step.RETRY_WAIT.value
        self._publish_progress(session, row, saga, approved, now)
        if row.step != saga.step.value or row.step_at is None:
            metrics.step_left(session, row.step, row.step_at, now)
            row.step_at = now
        row.step = saga.step.value
        row.state = saga.to_json()
        row.updated_at = now
        if saga.finished:
            row.deadline = None
            self._finish(session, row, saga, approved, now)
        elif saga.step is Step.RETRY_WAIT:
            next_round = now + timedelta(seconds=saga.backoff_s(self._timings.retry_backoff_s))
            row.deadline = next_round
            if waiting_to_retry:
                self._log_saga(
                    session,
                    row,
                    approved,
                    SYSTEM_COORDINATOR,
                    ops_pb2.PROVISIONING_OUTCOME_FAILED,
                    f"round {saga.round} failed and was rolled back on both routers "
                    f"({saga.reason}); next round at {next_round.isoformat()}",
                )
        else:
            row.deadline = now + timedelta(seconds=self._timings.step_deadline_s)

    def _publish_progress(
        self,
        session: Session,
        row: SagaRow,
        saga: Saga,
        approved: order_pb2.OrderApproved,
        now: datetime,
    ) -> None:
        """ProvisioningProgress (through the outbox) when the saga starts or enters another
        step, for the order service to show; called before ``row.step`` takes the new step.
        Not for a finished saga: its outcome event follows."""
        starting = not row.state  # a saga's row has no state before its first _apply
        if saga.finished or (row.step == saga.step.value and not starting):
            return
        progress = provisioning_pb2.ProvisioningProgress(
            occurred_at=timestamp(now),
            order_id=approved.order_id,
            circuit_id=approved.circuit.circuit_id,
            saga_id=row.saga_id,
            operation=approved.operation,
            step=saga.step.value,
        )
        outbox.add(session, self._topics.circuit_events, approved.circuit.circuit_id, progress)

    def _command(
        self,
        saga_id: str,
        approved: order_pb2.OrderApproved,
        send: Send,
        operation: int,
        now: datetime,
    ) -> provisioning_pb2.ProvisioningCommand:
        end = approved.circuit.a_end if send.side is Side.SINGAPORE else approved.circuit.z_end
        command = provisioning_pb2.ProvisioningCommand(
            occurred_at=timestamp(now),
            saga_id=saga_id,
            order_id=approved.order_id,
            circuit_id=approved.circuit.circuit_id,
            action=ACTION_PROTO[send.action],
            operation=circuit_operation_pb2.CircuitOperation.ValueType(operation),
            target_side=send.side.value,
            target_telco_id=TELCO_OF_SIDE[send.side],
            target_router_name=end.router_name,
            circuit=approved.circuit,
            confirm_timeout=duration_pb2.Duration(seconds=self._timings.confirm_timeout_s),
            persist_id=send.persist_id,
            # The longest the coordinator may wait (an agent behind a queue of work).
            deadline=timestamp(now + timedelta(seconds=self._timings.step_wait_max_s)),
            attempt=send.attempt,
            actor=saga_actor(approved),
        )
        if approved.HasField("previous_circuit"):
            command.previous_circuit.CopyFrom(approved.previous_circuit)
        if send.action is Action.PREPARE:
            for approval in approved.approvals:
                if approval.side == send.side.value:
                    command.approved_payload_sha256 = approval.payload_sha256
        return command

    def _finish(
        self,
        session: Session,
        row: SagaRow,
        saga: Saga,
        approved: order_pb2.OrderApproved,
        now: datetime,
    ) -> None:
        circuit = approved.circuit
        operation = Operation.from_proto(approved.operation)
        common: dict[str, Any] = {
            "occurred_at": timestamp(now),
            "circuit_id": circuit.circuit_id,
            "order_id": approved.order_id,
            "saga_id": row.saga_id,
            "tenant_id": circuit.tenant_id,
            "circuit": circuit,
            "price": approved.price,
            "effective_time": timestamp(now),
        }
        event: Message
        activated = (
            approved.occurred_at.ToDatetime(tzinfo=UTC)
            if saga.step is Step.DONE
            and operation is Operation.CREATE
            and approved.HasField("occurred_at")
            else None
        )
        metrics.saga_finished(session, saga.step.value, activated, now)
        if saga.step is Step.REPLAN:
            self._replan(session, row, saga, approved)
            return
        if saga.step is Step.DONE:
            if operation is Operation.CREATE:
                event = circuit_pb2.CircuitActivated(
                    bandwidth_mbps=circuit.bandwidth_mbps, **common
                )
            elif operation is Operation.MODIFY:
                event = circuit_pb2.CircuitModified(
                    bandwidth_mbps=circuit.bandwidth_mbps,
                    previous_bandwidth_mbps=approved.previous_circuit.bandwidth_mbps,
                    # A boost's raise or revert: billing bills its hours on their own line.
                    boost=approved.boost if approved.HasField("boost") else None,
                    **common,
                )
            else:
                event = circuit_pb2.CircuitDisconnected(
                    bandwidth_mbps=circuit.bandwidth_mbps, **common
                )
            self._intend(
                session, circuit, approved, "deleted" if operation is Operation.DELETE else "active"
            )
        else:
            faults = saga.faults()
            remains = approved.previous_circuit if operation is Operation.MODIFY else circuit
            event = circuit_pb2.ProvisioningFailed(
                operation=approved.operation,
                bandwidth_mbps=0 if operation is Operation.CREATE else remains.bandwidth_mbps,
                failures=[
                    circuit_pb2.RouterFailure(error=f.to_proto(), rolled_back=back)
                    for _, f, back in faults
                ],
                message=saga.reason,
                rolled_back=all(s.rolled_back or not s.confirmed for s in saga.sides.values()),
                **{**common, "circuit": remains},
            )
        outbox.add(session, self._topics.circuit_events, circuit.circuit_id, event)
        self._log_saga(
            session,
            row,
            approved,
            saga_actor(approved),
            ops_pb2.PROVISIONING_OUTCOME_SUCCEEDED
            if saga.step is Step.DONE
            else ops_pb2.PROVISIONING_OUTCOME_FAILED,
            f"saga {saga.step.value}: {saga.reason}".rstrip(": "),
        )

    def _replan(
        self,
        session: Session,
        row: SagaRow,
        saga: Saga,
        approved: order_pb2.OrderApproved,
    ) -> None:
        """A payload no longer matched its approval: publish the plan as rendered now, for
        the order to go back to approval (no ProvisioningFailed: nothing failed); a
        repair (no order) is superseded instead."""
        if not approved.order_id:
            supersede_saga(session, row.saga_id, saga.reason)
            self._log_saga(
                session,
                row,
                approved,
                SYSTEM_COORDINATOR,
                ops_pb2.PROVISIONING_OUTCOME_FAILED,
                f"saga replan: {saga.reason}; the repair is superseded",
            )
            return
        created = order_pb2.OrderCreated(
            event_id=str(uuid.uuid4()),
            order_id=approved.order_id,
            operation=approved.operation,
            circuit=approved.circuit,
            previous_bandwidth_mbps=approved.previous_circuit.bandwidth_mbps,
            price=approved.price,
        )
        planned = provisioning_pb2.ProvisioningPlanned(
            replan=True, saga_id=row.saga_id, reason=saga.reason
        )
        rendered = {
            side: saga.side(side).rendered_sha256
            for side in (Side.SINGAPORE, Side.CHONGQING)
            if saga.side(side).rendered_sha256
        }
        self._publish_plan(session, created, planned, rendered)
        self._log_saga(
            session,
            row,
            approved,
            SYSTEM_COORDINATOR,
            ops_pb2.PROVISIONING_OUTCOME_FAILED,
            f"saga replan: {saga.reason}; new plan published for approval",
        )

    def _log_saga(
        self,
        session: Session,
        row: SagaRow,
        approved: order_pb2.OrderApproved,
        actor: str,
        outcome: int,
        message: str,
    ) -> None:
        """A log entry for the saga as a whole (not one router's step); ``actor``: who
        caused it (the saga's approvers, or the automatic component)."""
        session.add(
            LogEntry(
                saga_id=row.saga_id,
                order_id=approved.order_id,
                circuit_id=approved.circuit.circuit_id,
                operation=approved.operation,
                step=ops_pb2.PROVISIONING_STEP_VERIFY,
                router_name="",
                side=0,
                outcome=outcome,
                message=message,
                actor=actor,
            )
        )

    def _intend(
        self,
        session: Session,
        circuit: common_pb2.CircuitParameters,
        approved: order_pb2.OrderApproved,
        status: str,
    ) -> None:
        session.merge(
            IntendedCircuit(
                circuit_id=circuit.circuit_id,
                status=status,
                parameters=circuit.SerializeToString(),
                price=approved.price.SerializeToString(),
                tenant_id=circuit.tenant_id,
                updated_at=utcnow(),
            )
        )


def _sent(sends: list[Send]) -> str:
    """What a log entry says the saga sent."""
    return ", ".join(f"{s.action.name} to {s.side.name.lower()}" for s in sends) or "nothing"


class DeadlineWorker(Worker):
    """Acts on sagas whose awaited replies are late (and resumes them after a restart)."""

    name = "saga-deadlines"

    def __init__(
        self,
        coordinator: Coordinator,
        session_factory: sessionmaker[Session],
        interval_s: float = 0.5,
    ) -> None:
        self._coordinator = coordinator
        self._factory = session_factory
        self._interval_s = interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("deadline check failed")

    def run_once(self) -> int:
        now = datetime.now(UTC)
        with self._factory() as session:
            due = session.scalars(
                select(SagaRow.saga_id).where(SagaRow.deadline.is_not(None), SagaRow.deadline < now)
            ).all()
        for saga_id in due:
            with self._factory() as session, session.begin():
                row = session.scalars(
                    select(SagaRow).where(SagaRow.saga_id == saga_id).with_for_update()
                ).first()
                deadline = row.deadline if row is not None else None
                if row is None or deadline is None:
                    continue
                if (deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)) >= now:
                    continue
                self._coordinator.on_deadline(session, row)
        return len(due)

    def close(self) -> None:
        """Nothing to release."""
