"""Repairs (redeploys) as planned changes: request, approve, reject, list; the rules are in
:mod:`services.provisioning.domain.repairs`.

A request reads both routers once (what each needs: create or replace), renders each
router's payload and stores the plan; nothing is sent. An approval re-renders the payloads
from the intent and the routers as they are now: a difference supersedes the plan. The
last approval starts the saga with the approved hashes on its commands, so the agents
refuse a payload that changed between approval and prepare (the saga then ends in REPLAN
and the repair is superseded, see supersede_saga).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import common_pb2, order_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from idc.type.v1 import circuit_operation_pb2, router_payload_pb2
from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.paging import PageRequest, after, page_of
from services.common.timestamps import to_timestamp
from services.provisioning.domain.circuits import Operation, Side
from services.provisioning.domain.faults import RouterFailure
from services.provisioning.domain.repairs import (
    SYSTEM,
    Decision,
    DecisionKind,
    Operator,
    Plan,
    RepairState,
    Verdict,
    check_requester,
    decide_approval,
    decide_rejection,
)
from services.provisioning.tables import (
    IntendedCircuit,
    RepairDecisionRow,
    RepairPayload,
    RepairPlan,
    utcnow,
)

if TYPE_CHECKING:  # the coordinator calls supersede_saga
    from services.provisioning.coordinator import Coordinator

ACTIVE = "active"


def operator_of(principal: Principal) -> Operator:
    return Operator(principal.ref, principal.telco)


def supersede_saga(session: Session, saga_id: str, reason: str) -> None:
    """A repair's saga ended in REPLAN (an agent rendered another payload than the approved
    one; both routers unchanged): the repair is superseded."""
    plan = session.scalars(select(RepairPlan).where(RepairPlan.saga_id == saga_id)).first()
    if plan is not None:
        plan.state = RepairState.SUPERSEDED.value
        session.add(_decision(plan.repair_id, DecisionKind.SUPERSEDED, None, SYSTEM, "", reason))


def _decision(
    repair_id: str,
    kind: DecisionKind,
    side: Side | None,
    actor: str,
    payload_sha256: str = "",
    comment: str = "",
) -> RepairDecisionRow:
    return RepairDecisionRow(
        repair_id=repair_id,
        kind=kind.value,
        side=side.value if side is not None else 0,
        actor=actor,
        payload_sha256=payload_sha256,
        comment=comment,
        at=utcnow(),
    )


class Repairs:
    def __init__(self, coordinator: Coordinator, session_factory: sessionmaker[Session]) -> None:
        self._coordinator = coordinator
        self._factory = session_factory

    # -- rendering ----------------------------------------------------------------------

    def _render(
        self, circuit_id: str
    ) -> tuple[common_pb2.CircuitParameters, list[router_payload_pb2.RouterPayload]]:
        """The circuit's intent and each router's repair payload as rendered now."""
        with self._factory() as session:
            row = session.get(IntendedCircuit, circuit_id)
        if row is None or row.status != ACTIVE:
            raise NotFound(f"circuit {circuit_id!r} is not active here")
        params = common_pb2.CircuitParameters.FromString(row.parameters)
        try:
            operations = self._coordinator.repair_operations(params)
        except RouterFailure as exc:
            raise Unavailable(
                f"cannot read {exc.fault.router_name} to choose what to redeploy: "
                f"{exc.fault.message}; nothing was sent"
            ) from exc
        return params, self._coordinator.payloads(operations, params)

    # -- requests -----------------------------------------------------------------------

    def request(self, principal: Principal, circuit_id: str, dry_run: bool) -> pb.RedeployResponse:
        _, payloads = self._render(circuit_id)
        operator = operator_of(principal)
        if not dry_run:
            check_requester(operator, [p.telco_id for p in payloads])
        response = pb.RedeployResponse(payloads=payloads)
        if dry_run:
            return response
        repair_id = "rep-" + uuid.uuid4().hex[:16]
        with self._factory() as session, session.begin():
            session.add(
                RepairPlan(
                    repair_id=repair_id,
                    circuit_id=circuit_id,
                    state=RepairState.PENDING_APPROVAL.value,
                    requested_by=operator.ref,
                    requester_telco=operator.telco or "",
                    created_at=utcnow(),
                )
            )
            for payload in payloads:
                session.add(
                    RepairPayload(
                        repair_id=repair_id,
                        side=payload.side,
                        telco_id=payload.telco_id,
                        router_name=payload.router_name,
                        operation=payload.operation,
                        sha256=payload.sha256,
                        payload=payload.SerializeToString(),
                    )
                )
            session.add(_decision(repair_id, DecisionKind.REQUESTED, None, operator.ref))
            session.flush()
            response.repair.CopyFrom(self._message(session, repair_id))
        return response

    def list(self, circuit_id: str, pending_only: bool, page: PageRequest
             ) -> tuple[list[pb.Repair], str]:
        """One page of repairs, newest first, and the next page's token."""
        key = (RepairPlan.created_at, RepairPlan.repair_id)
        query = select(*key)
        if circuit_id:
            query = query.where(RepairPlan.circuit_id == circuit_id)
        if pending_only:
            query = query.where(RepairPlan.state == RepairState.PENDING_APPROVAL.value)
        if page.after is not None:
            query = query.where(after(key, page.after, descending=(True, False)))
        query = query.order_by(RepairPlan.created_at.desc(), RepairPlan.repair_id
                               ).limit(page.limit + 1)
        with self._factory() as session:
            shown, next_page_token = page_of(session.execute(query).all(), page,
                                            lambda row: (row.created_at, row.repair_id))
            return [self._message(session, rid) for _, rid in shown], next_page_token

    # -- decisions ----------------------------------------------------------------------

    def approve(
        self, principal: Principal, repair_id: str, payload_sha256: str, comment: str
    ) -> pb.Repair:
        operator = operator_of(principal)
        with self._factory() as session:
            plan = self._plan(session, repair_id, lock=False)
        # Fail fast (no router read) on what the plan alone refuses.
        decide_approval(plan, operator, payload_sha256, _planned_hashes(plan))
        circuit_id = self._circuit_of(repair_id)
        params, rendered = self._render(circuit_id)
        now_hashes = {Side(p.side): p.sha256 for p in rendered}
        with self._factory() as session, session.begin():
            plan = self._plan(session, repair_id, lock=True)
            side, verdict = decide_approval(plan, operator, payload_sha256, now_hashes)
            row = session.get(RepairPlan, repair_id)
            assert row is not None
            if verdict is Verdict.SUPERSEDED:
                changed = ", ".join(
                    f"{s.name.lower()} planned {sha[:12]}, now {now_hashes.get(s, '-')[:12]}"
                    for s, (_, sha) in plan.payloads.items()
                    if now_hashes.get(s) != sha
                )
                why = f"the intent or a router changed since the plan ({changed})"
                row.state = RepairState.SUPERSEDED.value
                session.add(_decision(repair_id, DecisionKind.SUPERSEDED, None, SYSTEM, "", why))
            else:
                session.add(
                    _decision(
                        repair_id,
                        DecisionKind.APPROVED,
                        side,
                        operator.ref,
                        payload_sha256,
                        comment,
                    )
                )
                if verdict is Verdict.COMPLETE:
                    session.flush()
                    self._start(session, row, params)
        if verdict is Verdict.SUPERSEDED:
            raise FailedPrecondition(
                f"repair {repair_id} is superseded: {why}; request a new repair"
            )
        with self._factory() as session:
            return self._message(session, repair_id)

    def reject(self, principal: Principal, repair_id: str, reason: str) -> pb.Repair:
        if not reason.strip():
            raise InvalidArgument.for_field("reason", "is required")
        operator = operator_of(principal)
        with self._factory() as session, session.begin():
            plan = self._plan(session, repair_id, lock=True)
            side = decide_rejection(plan, operator)
            row = session.get(RepairPlan, repair_id)
            assert row is not None
            row.state = RepairState.REJECTED.value
            session.add(_decision(repair_id, DecisionKind.REJECTED, side, operator.ref, "", reason))
            session.flush()
            return self._message(session, repair_id)

    def _start(
        self, session: Session, row: RepairPlan, params: common_pb2.CircuitParameters
    ) -> None:
        """Every payload approved: the saga, carrying each approved hash and approver."""
        payloads = _payload_rows(session, row.repair_id)
        approvers = _newest_approvals(session, row.repair_id)
        intended = session.get(IntendedCircuit, row.circuit_id)
        assert intended is not None
        approved = order_pb2.OrderApproved(
            event_id=str(uuid.uuid4()),
            occurred_at=to_timestamp(utcnow()),
            operation=circuit_operation_pb2.CIRCUIT_OPERATION_MODIFY,
            circuit=params,
            previous_circuit=params,
        )
        approved.price.ParseFromString(intended.price)
        for payload in payloads:
            decision = approvers[payload.side]
            approved.approvals.append(
                order_pb2.ApprovedPayload(
                    side=payload.side,  # type: ignore[arg-type]
                    telco_id=payload.telco_id,
                    router_name=payload.router_name,
                    payload_sha256=payload.sha256,
                    approver=decision.actor,
                    approve_time=to_timestamp(decision.at),
                )
            )
        operations = {Side(p.side): Operation(p.operation) for p in payloads}
        row.saga_id = self._coordinator.start(session, approved, operations)
        row.state = RepairState.STARTED.value
        session.add(
            _decision(row.repair_id, DecisionKind.STARTED, None, SYSTEM, "", f"saga {row.saga_id}")
        )

    # -- reading ------------------------------------------------------------------------

    def _circuit_of(self, repair_id: str) -> str:
        with self._factory() as session:
            row = session.get(RepairPlan, repair_id)
        if row is None:
            raise NotFound(f"repair {repair_id!r} not found")
        return row.circuit_id

    def _plan(self, session: Session, repair_id: str, *, lock: bool) -> Plan:
        query = select(RepairPlan).where(RepairPlan.repair_id == repair_id)
        row = session.scalars(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound(f"repair {repair_id!r} not found")
        return Plan(
            repair_id=row.repair_id,
            state=RepairState(row.state),
            requested_by=row.requested_by,
            payloads={
                Side(p.side): (p.telco_id, p.sha256) for p in _payload_rows(session, repair_id)
            },
            decisions=[
                Decision(
                    DecisionKind(d.kind),
                    Side(d.side) if d.side else None,
                    d.actor,
                    d.payload_sha256,
                )
                for d in _decision_rows(session, repair_id)
            ],
        )

    def _message(self, session: Session, repair_id: str) -> pb.Repair:
        row = session.get(RepairPlan, repair_id)
        assert row is not None
        message = pb.Repair(
            repair_id=row.repair_id,
            circuit_id=row.circuit_id,
            state=pb.RepairState.Value(f"REPAIR_STATE_{row.state}"),
            requested_by=row.requested_by,
            request_time=to_timestamp(row.created_at),
            saga_id=row.saga_id,
        )
        for payload in _payload_rows(session, repair_id):
            message.payloads.add().ParseFromString(payload.payload)
        for d in _decision_rows(session, repair_id):
            message.decisions.append(
                pb.RepairDecision(
                    kind=pb.RepairDecisionKind.Value(f"REPAIR_DECISION_KIND_{d.kind}"),
                    side=d.side,  # type: ignore[arg-type]
                    actor=d.actor,
                    payload_sha256=d.payload_sha256,
                    comment=d.comment,
                    time=to_timestamp(d.at),
                )
            )
        return message


def _planned_hashes(plan: Plan) -> dict[Side, str]:
    return {side: sha for side, (_, sha) in plan.payloads.items()}


def _payload_rows(session: Session, repair_id: str) -> Sequence[RepairPayload]:
    return session.scalars(
        select(RepairPayload)
        .where(RepairPayload.repair_id == repair_id)
        .order_by(RepairPayload.side)
    ).all()


def _decision_rows(session: Session, repair_id: str) -> Sequence[RepairDecisionRow]:
    return session.scalars(
        select(RepairDecisionRow)
        .where(RepairDecisionRow.repair_id == repair_id)
        .order_by(RepairDecisionRow.id)
    ).all()


def _newest_approvals(session: Session, repair_id: str) -> dict[int, RepairDecisionRow]:
    newest: dict[int, RepairDecisionRow] = {}
    for decision in _decision_rows(session, repair_id):
        if decision.kind == DecisionKind.APPROVED.value:
            newest[decision.side] = decision
    return newest
