"""The saga watchdog: sagas waiting on a telco whose agents have gone silent.

A saga that awaits a command from one side while that side's agent has answered nothing
for longer than a prepared commit can live (the confirm timeout plus a step deadline) is
waiting on agents that may all be gone. The watchdog then

* raises the alarm ``idc.alarm.saga-waiting`` (health detail and log), one text per
  waiting side, until the saga moves on;
* reads the router on a session of its own: it takes the candidate lock first, which the
  devstack's netconfd refuses to every session while a confirmed commit is pending
  (measured), so a granted lock means running is final; it is released at once;
* settles the awaited command from what running holds (Saga.on_router_read): a ROLLBACK
  by the previous state, a CONFIRM by the target; a side that lost its change after the
  decision to confirm makes the other side compensate. Anything else waits for an agent.

The router is read at most once per round, a few seconds apart, so the watchdog never
holds off the router's own revert (netconfd reverts only after a second with no input).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import order_pb2
from services.common.grpc_server import AlarmCheck, Worker
from services.provisioning.coordinator import FINISHED_STEPS, Coordinator
from services.provisioning.domain.circuits import Side, circuit_end
from services.provisioning.domain.faults import FaultKind, RouterFailure
from services.provisioning.domain.saga import Saga
from services.provisioning.inventory import Device, Inventory
from services.provisioning.router import RouterSession
from services.provisioning.tables import SagaRow, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """One side of an unfinished saga awaiting a command from a silent agent."""

    saga_id: str
    circuit_id: str
    side: Side
    router_name: str
    action: str
    command_id: str
    since: datetime

    def text(self, found: str) -> str:
        """The alarm's text: stable while nothing changes (it is logged when it does)."""
        return (
            f"saga {self.saga_id} (circuit {self.circuit_id}) waits for "
            f"{self.side.name.lower()}'s {self.action} on {self.router_name}, its agent silent "
            f"since {self.since.isoformat(timespec='seconds')}: {found}"
        )


def read_when_settled(session: RouterSession) -> str | None:
    """Running, when no commit is pending on the router (its candidate lock is granted);
    None while the lock is refused (a pending commit, or a session at work). Raises
    RouterFailure when the router cannot be read."""
    try:
        session.lock_candidate()
    except RouterFailure as exc:
        if exc.fault.kind is FaultKind.RPC_ERROR and exc.fault.retryable:  # lock-denied, in-use
            return None
        raise
    try:
        return session.running()
    finally:
        with contextlib.suppress(RouterFailure):
            session.unlock_candidate()


class SagaWatchdog(Worker):
    name = "saga-watchdog"

    def __init__(
        self,
        coordinator: Coordinator,
        session_factory: sessionmaker[Session],
        inventory: Inventory,
        open_router: Callable[[Device], RouterSession],
        silence_s: float,
        interval_s: float = 2.0,
    ) -> None:
        self._coordinator = coordinator
        self._factory = session_factory
        self._inventory = inventory
        self._open_router = open_router
        self._silence_s = silence_s
        self._interval_s = interval_s
        self._texts: list[str] = []

    def alarms(self) -> dict[str, AlarmCheck]:
        return {"saga-waiting": lambda: list(self._texts)}

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("saga watchdog round failed")

    def waiting(self, now: datetime) -> list[Waiting]:
        with self._factory() as session:
            rows = session.scalars(select(SagaRow).where(SagaRow.step.not_in(FINISHED_STEPS)))
            found = []
            for row in rows:
                saga = Saga.from_json(row.state)
                approved = order_pb2.OrderApproved()
                approved.ParseFromString(row.approved)
                for side in saga.awaited():
                    state = saga.side(side)
                    router = circuit_end(approved.circuit, side).router_name
                    sent = datetime.fromisoformat(state.sent_at) if state.sent_at else now
                    since = max(sent, self._coordinator.silent_since(router))
                    if (now - since).total_seconds() > self._silence_s:
                        found.append(
                            Waiting(
                                row.saga_id,
                                row.circuit_id,
                                side,
                                router,
                                state.awaiting,
                                state.command_id,
                                since,
                            )
                        )
        return found

    def run_once(self) -> int:
        """One round: every waiting side raised, each router read once; how many settled."""
        now = utcnow()
        waiting = self.waiting(now)
        reads: dict[str, str | None] = {}
        findings: dict[str, str] = {}
        for router in {w.router_name for w in waiting}:
            reads[router], findings[router] = self._read(router)
        settled = 0
        texts = []
        for wait in waiting:
            running = reads[wait.router_name]
            moved = running is not None and self._settle(wait, running)
            settled += moved
            if not moved:
                texts.append(wait.text(findings[wait.router_name]))
        self._texts = texts  # the health monitor logs them as they are raised and cleared
        return settled

    def _read(self, router: str) -> tuple[str | None, str]:
        device = self._inventory.get(router)
        if device is None:
            return None, "router not in the inventory"
        session = self._open_router(device)
        try:
            running = read_when_settled(session)
        except RouterFailure as exc:
            return None, f"router unreadable: {exc.fault.message}"
        finally:
            session.close()
        if running is None:
            return None, "a commit is pending on the router (candidate lock refused)"
        return running, "router read; the saga cannot be settled from what it holds"

    def _settle(self, wait: Waiting, running: str) -> bool:
        with self._factory() as session, session.begin():
            row = session.scalars(
                select(SagaRow).where(SagaRow.saga_id == wait.saga_id).with_for_update()
            ).first()
            if row is None or row.step in FINISHED_STEPS:
                return True
            state = Saga.from_json(row.state).side(wait.side)
            if state.command_id != wait.command_id or state.awaiting != wait.action:
                return True  # answered meanwhile
            return self._coordinator.on_router_read(session, row, wait.side, running)

    def close(self) -> None:
        """Nothing to release: each read opens and closes its own session."""
