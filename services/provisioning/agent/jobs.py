"""Commands queued for a router's worker: the consumer handler that queues them, and the
decoded form the worker acts on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from idc.events.v1 import provisioning_pb2
from services.common.errors import InvalidArgument
from services.common.events import Envelope
from services.common.events.envelope import HEADER_TRACEPARENT, capture_trace_headers
from services.provisioning.tables import AgentCommand

PREPARE = provisioning_pb2.PROVISIONING_ACTION_PREPARE
CONFIRM = provisioning_pb2.PROVISIONING_ACTION_CONFIRM
ROLLBACK = provisioning_pb2.PROVISIONING_ACTION_ROLLBACK


def trace_id_of(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 3 else ""


@dataclass
class Job:
    """A queued command, decoded."""

    row_id: int
    command: provisioning_pb2.ProvisioningCommand
    traceparent: str

    @property
    def action(self) -> int:
        return self.command.action

    @property
    def circuit_id(self) -> str:
        return self.command.circuit_id

    def trace_context(self) -> otel_context.Context:
        """The context the command was consumed in (empty when it carried none)."""
        return propagate.extract({HEADER_TRACEPARENT: self.traceparent})


class CommandQueue:
    """The consumer handler: queue each command for its router's worker."""

    def __init__(self, telco: str, routers: Iterable[str], wake: Callable[[str], None]) -> None:
        self._telco = telco
        self._routers = set(routers)
        self._wake = wake

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        if not isinstance(event, provisioning_pb2.ProvisioningCommand):
            return
        router = event.target_router_name
        if router not in self._routers or event.target_telco_id != self._telco:
            raise InvalidArgument(
                f"command {event.event_id} is for router {router!r} of telco "
                f"{event.target_telco_id!r}, not one of this agent's ({self._telco})"
            )
        session.add(
            AgentCommand(
                event_id=envelope.event_id,
                router_name=router,
                circuit_id=event.circuit_id,
                action=event.action,
                command=event.SerializeToString(),
                # The consuming span's context (a child of the command's producer), so the
                # worker's step continues the trace below it.
                traceparent=capture_trace_headers().get(HEADER_TRACEPARENT)
                or envelope.traceparent
                or "",
            )
        )
        # After the commit: a worker woken before it would find nothing queued yet and
        # sleep its poll interval.
        sa_event.listen(session, "after_commit", lambda _s: self._wake(router), once=True)
