"""What every step of a router's worker works with: the router's session (behind the
RouterSession port), its records, the renderer, and the reads that check a step's result."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.provisioning.agent.jobs import Job
from services.provisioning.agent.ledger import Ledger
from services.provisioning.domain.batch import Member, MemberState
from services.provisioning.domain.circuits import Operation, circuit_end
from services.provisioning.domain.faults import (
    FaultKind,
    PayloadMismatch,
    RouterFailure,
    RouterFault,
)
from services.provisioning.domain.observe import (
    Leaves,
    SubinterfaceKey,
    differences,
    intended_leaves,
    running_filter,
    running_subinterfaces,
)
from services.provisioning.inventory import Device
from services.provisioning.rendering import Renderer
from services.provisioning.router import RouterSession

log = logging.getLogger(__name__)

Expectation = tuple[SubinterfaceKey, Leaves | None]


@dataclass
class Intent:
    """What a PREPARE means on this router: the payload and how to undo it."""

    job: Job
    operation: Operation
    payload: str
    sha256: str
    inverse: str
    # Leaves the circuit must have in running after the step (None: absent), and before.
    after: Leaves | None
    before: Leaves | None
    key: SubinterfaceKey

    def member(self) -> Member:
        return Member(
            saga_id=self.job.command.saga_id,
            state=MemberState.UNDECIDED,
            inverse=self.inverse,
            interface=self.key[0],
            vlan=self.key[1],
            after=self.after,
            before=self.before,
            sha256=self.sha256,
        )


@dataclass
class RouterContext:
    device: Device
    session: RouterSession
    renderer: Renderer
    ledger: Ledger

    def fault(self, kind: FaultKind, message: str, *, retryable: bool = False) -> RouterFault:
        return RouterFault(kind, self.device.name, message, retryable=retryable)

    def release(self) -> None:
        """The candidate discarded and unlocked, whatever fails (logged). Only while the
        session holds the lock: what a session without it would discard is not ours (an
        edit another session made without a lock), and our own edits went with our lock."""
        for step in (self.session.discard, self.session.unlock_candidate):
            if not self.session.holds_lock:
                return  # never held, or lost with a session that dropped on the way
            try:
                step()
            except RouterFailure as exc:
                log.warning("%s: %s", self.device.name, exc)

    # -- reading running ----------------------------------------------------------------

    def running_subinterfaces(
        self, keys: Iterable[SubinterfaceKey]
    ) -> dict[SubinterfaceKey, Leaves]:
        platform = self.device.platform
        return running_subinterfaces(platform, self.session.running(running_filter(platform, keys)))

    def verify(self, expectations: Iterable[Expectation]) -> RouterFault | None:
        """Read the sub-interfaces once; a fault describing the first not as expected."""
        faults = self.check(list(expectations))
        return next((f for f in faults.values() if f is not None), None)

    def check(
        self, expectations: Sequence[Expectation]
    ) -> dict[SubinterfaceKey, RouterFault | None]:
        """Per sub-interface, a fault when running does not hold what is expected: one read
        of those sub-interfaces only. A failed read is every one's fault."""
        if not expectations:
            return {}
        try:
            running = self.running_subinterfaces(key for key, _ in expectations)
        except RouterFailure as exc:
            return {key: exc.fault for key, _ in expectations}
        faults: dict[SubinterfaceKey, RouterFault | None] = {}
        for key, want in expectations:
            have = running.get(key)
            fault = None
            if want is None and have is not None:
                fault = self.fault(
                    FaultKind.VERIFICATION_FAILED,
                    f"sub-interface {key[0]}.{key[1]} is still configured",
                )
            elif want is not None:
                diff = differences(want, have)
                if diff:
                    first = diff[0]
                    fault = self.fault(
                        FaultKind.VERIFICATION_FAILED,
                        f"{first.path} is {first.actual!r}, expected {first.intended!r}",
                    )
            faults[key] = faults.get(key) or fault
        return faults

    # -- rendering ----------------------------------------------------------------------

    def intent(self, job: Job) -> Intent:
        """Render the command's payload and its inverse; raises RouterFailure."""
        command = job.command
        operation = Operation.from_proto(command.operation)
        side = self.device.side
        try:
            end = circuit_end(command.circuit, side)
            previous = (
                circuit_end(command.previous_circuit, side)
                if operation is Operation.MODIFY
                else None
            )
        except InvalidArgument as exc:
            raise RouterFailure(self.fault(FaultKind.INTERNAL, exc.message)) from exc
        if end.router_name != self.device.name:
            raise RouterFailure(
                self.fault(
                    FaultKind.INTERNAL,
                    f"circuit end is on {end.router_name}, not {self.device.name}",
                )
            )
        if command.circuit.sandbox != self.device.sandbox:  # README "Sandbox"
            raise RouterFailure(
                self.fault(
                    FaultKind.INTERNAL,
                    f"{'a sandbox' if command.circuit.sandbox else 'a real'} circuit is never "
                    f"configured on {'a sandbox' if self.device.sandbox else 'a real'} router; "
                    "router untouched",
                )
            )
        platform = self.device.platform
        rendered = self.renderer.render(platform, operation, end)
        if command.approved_payload_sha256 and command.approved_payload_sha256 != rendered.sha256:
            raise PayloadMismatch(
                self.fault(
                    FaultKind.PAYLOAD_MISMATCH,
                    f"rendered payload {rendered.sha256} differs from the approved "
                    f"{command.approved_payload_sha256}; the order needs approval of the new plan",
                ),
                rendered.sha256,
            )
        want = intended_leaves(platform, end)
        if operation is Operation.CREATE:
            inverse = self.renderer.render(platform, Operation.DELETE, end).content
            after, before = want, None
        elif operation is Operation.DELETE:
            inverse = self.renderer.render(platform, Operation.CREATE, end).content
            after, before = None, want
        else:
            assert previous is not None
            inverse = self.renderer.render(platform, Operation.MODIFY, previous).content
            after, before = want, intended_leaves(platform, previous)
        return Intent(
            job, operation, rendered.content, rendered.sha256, inverse, after, before,
            (end.interface, end.vlan),
        )
