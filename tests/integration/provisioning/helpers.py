"""Shared helpers of the provisioning integration tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from google.protobuf import duration_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import common_pb2, provisioning_pb2
from idc.type.v1 import circuit_operation_pb2, side_pb2
from services.common.db import make_engine, make_session_factory, migrate
from services.common.events.tables import OutboxRow
from services.common.timestamps import to_timestamp
from services.provisioning.app import MIGRATIONS
from services.provisioning.domain.circuits import Operation, circuit_end
from services.provisioning.domain.observe import running_subinterfaces
from services.provisioning.inventory import Device
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from services.provisioning.tables import AgentCommand

if TYPE_CHECKING:
    # A type only: the unit tests share the command helpers below without the devstack.
    from devstack.netconf import Router

T = TypeVar("T")
SG_IF = "xe-0/0/1"
CQ_IF = "GigabitEthernet0/0/1"


def device_of(router: Router) -> Device:
    return Device(
        name=router.name,
        telco=router.telco,
        site=f"{router.telco}-site-1",
        vendor=router.platform,
        platform=router.platform,
        host=router.host,
        port=router.port,
        username=router.username,
        key_path=router.key_path,
        known_hosts_path=router.known_hosts_path,
        sandbox=router.sandbox,
    )


def database(url: str) -> sessionmaker[Session]:
    """The provisioning service's database at ``url``, built by its migrations."""
    migrate(url, MIGRATIONS)
    return make_session_factory(make_engine(url))


def circuit(
    vlan: int, mbps: int = 100, description: str = "test circuit", circuit_id: str | None = None
) -> common_pb2.CircuitParameters:
    return common_pb2.CircuitParameters(
        circuit_id=circuit_id or f"CKT-{uuid.uuid4().hex[:10]}",
        tenant_id="tenant-1",
        a_end=common_pb2.CircuitEndpoint(
            side=side_pb2.SIDE_SINGAPORE,
            telco_id="sg",
            site_id="sg-site-1",
            router_name="sg-edge-1",
            port_id="sg-p1",
            interface_name=SG_IF,
            vlan_id=vlan,
        ),
        z_end=common_pb2.CircuitEndpoint(
            side=side_pb2.SIDE_CHONGQING,
            telco_id="cq",
            site_id="cq-site-1",
            router_name="cq-edge-1",
            port_id="cq-p1",
            interface_name=CQ_IF,
            vlan_id=vlan,
        ),
        bandwidth_mbps=mbps,
        burst_mbps=0,
        description=description,
    )


def command(
    device: Device,
    action: int,
    params: common_pb2.CircuitParameters,
    *,
    operation: int = 1,
    saga_id: str = "saga-1",
    persist_id: str = "",
    approved: str = "",
    previous: common_pb2.CircuitParameters | None = None,
    confirm_timeout_s: int = 60,
) -> provisioning_pb2.ProvisioningCommand:
    cmd = provisioning_pb2.ProvisioningCommand(
        event_id=str(uuid.uuid4()),
        saga_id=saga_id,
        order_id="order-1",
        circuit_id=params.circuit_id,
        action=provisioning_pb2.ProvisioningAction.ValueType(action),
        operation=circuit_operation_pb2.CircuitOperation.ValueType(operation),
        target_side=device.side.value,
        target_telco_id=device.telco,
        target_router_name=device.name,
        circuit=params,
        approved_payload_sha256=approved,
        confirm_timeout=duration_pb2.Duration(seconds=confirm_timeout_s),
        persist_id=persist_id,
        deadline=to_timestamp(datetime.now(UTC) + timedelta(seconds=60)),
        attempt=1,
    )
    if previous is not None:
        cmd.previous_circuit.CopyFrom(previous)
    return cmd


def enqueue(
    factory: sessionmaker[Session], *commands: provisioning_pb2.ProvisioningCommand
) -> None:
    with factory() as db, db.begin():
        for cmd in commands:
            db.add(
                AgentCommand(
                    event_id=cmd.event_id,
                    router_name=cmd.target_router_name,
                    circuit_id=cmd.circuit_id,
                    action=cmd.action,
                    command=cmd.SerializeToString(),
                )
            )


def replies(factory: sessionmaker[Session]) -> list[provisioning_pb2.ProvisioningReply]:
    with factory() as db:
        rows = db.scalars(
            select(OutboxRow)
            .where(OutboxRow.event_type == "idc.events.v1.ProvisioningReply")
            .order_by(OutboxRow.id)
        ).all()
    found = []
    for row in rows:
        reply = provisioning_pb2.ProvisioningReply()
        reply.ParseFromString(row.payload)
        found.append(reply)
    return found


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def subinterfaces(session: NetconfSession) -> dict[tuple[str, int], dict[str, str]]:
    return running_subinterfaces(session.device.platform, session.running())


def remove_vlans(session: NetconfSession, vlans: list[int]) -> None:
    """Remove the test's sub-interfaces from the router (cleanup)."""
    renderer = Renderer()
    side = session.device.side
    session.lock_candidate()
    try:
        session.discard()
        for vlan in vlans:
            end = circuit_end(circuit(vlan), side)
            session.edit_candidate(
                renderer.render(session.device.platform, Operation.DELETE, end).content
            )
        session.commit()
    finally:
        session.discard()
        session.unlock_candidate()
