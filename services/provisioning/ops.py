# ruff: noqa: N802 - method names are the gRPC contract's
"""``idc.provisioning.v1.ProvisioningService``: the telco ops' view of routers and circuits.

Reads go to the routers directly (get-config of running, read only); Redeploy requests a
repair (see repairs.py): a plan of what puts the intended configuration back on each router
from what it holds now (created where absent, replaced where present), sent through the
same two-router saga as an order once each telco's ops approved its router's payload.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import common_pb2, order_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as pb
from idc.provisioning.v1 import provisioning_service_pb2_grpc as pb_grpc
from idc.type.v1 import router_payload_pb2
from services.common.auth import Role, require_role
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.paging import PageRequest, checked, page_of, page_request
from services.common.timestamps import to_timestamp
from services.provisioning.coordinator import Coordinator
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.domain.faults import RouterFailure
from services.provisioning.domain.observe import (
    circuit_id_of,
    differences,
    intended_leaves,
    running_subinterfaces,
)
from services.provisioning.drift import sync_status_proto, sync_statuses
from services.provisioning.inventory import Device, Inventory
from services.provisioning.netconf import NetconfSession, read_running
from services.provisioning.rendering import Renderer
from services.provisioning.repairs import Repairs
from services.provisioning.tables import IntendedCircuit, LogEntry, PlannedOrder, utcnow

ACTIVE = "active"
OPS_ROLES = (Role.OPS, Role.ADMIN)
SYNC_PAGE_SIZE = 1000
DEVICE_PAGE_SIZE = 100
REPAIR_PAGE_SIZE = 100


def _params(row: IntendedCircuit) -> common_pb2.CircuitParameters:
    params = common_pb2.CircuitParameters()
    params.ParseFromString(row.parameters)
    return params


def _page(page_size: int, page_token: str, maximum: int) -> PageRequest:
    """A List call's page: ``maximum`` by default and at most."""
    return page_request(page_size, page_token, default=maximum, maximum=maximum)


class ProvisioningOps(pb_grpc.ProvisioningServiceServicer):
    def __init__(
        self,
        inventory: Inventory,
        renderer: Renderer,
        coordinator: Coordinator,
        session_factory: sessionmaker[Session],
        drift_interval_s: int = 0,
    ) -> None:
        self._inventory = inventory
        self._renderer = renderer
        self._coordinator = coordinator
        self._factory = session_factory
        self._drift_interval_s = drift_interval_s
        self._repairs = Repairs(coordinator, session_factory)

    # -- helpers ------------------------------------------------------------------------

    def _active(self, session: Session) -> list[IntendedCircuit]:
        return list(
            session.scalars(select(IntendedCircuit).where(IntendedCircuit.status == ACTIVE))
        )

    def _intended(self, circuit_id: str) -> IntendedCircuit:
        with self._factory() as session:
            row = session.get(IntendedCircuit, circuit_id)
        if row is None or row.status != ACTIVE:
            raise NotFound(f"circuit {circuit_id!r} is not active here")
        return row

    # -- RPCs ---------------------------------------------------------------------------

    def ListDevices(self, request: pb.ListDevicesRequest, context: Any) -> pb.ListDevicesResponse:
        require_role(*OPS_ROLES)
        page = _page(request.page_size, request.page_token, DEVICE_PAGE_SIZE)
        start = None if page.after is None else checked(page.after, str)
        devices, next_page_token = page_of(sorted(
            (device for device in self._inventory
             if (not request.side or device.side.value == request.side)
             and (start is None or (device.name,) > start)),
            key=lambda device: device.name), page, lambda device: (device.name,))
        with self._factory() as session:
            active = [_params(r) for r in self._active(session)]
        response = pb.ListDevicesResponse(next_page_token=next_page_token)
        for device in devices:
            probe = NetconfSession(device, timeout_s=5)
            reachable = probe.probe()
            found = pb.Device(
                name=device.name,
                side=device.side.value,
                telco_id=device.telco,
                site_id=device.site,
                vendor=device.vendor,
                platform=device.platform,
                management_address=device.management_address,
                reachable=reachable,
                capabilities=probe.capabilities if reachable else [],
                circuit_count=sum(
                    device.name in (c.a_end.router_name, c.z_end.router_name) for c in active
                ),
                sandbox=device.sandbox,
            )
            if reachable:
                found.last_seen_time.CopyFrom(to_timestamp(utcnow()))
            probe.close()
            response.devices.append(found)
        return response

    def DryRun(self, request: pb.DryRunRequest, context: Any) -> pb.DryRunResponse:
        require_role(*OPS_ROLES)
        if request.WhichOneof("target") == "order_id":
            with self._factory() as session:
                planned = session.get(PlannedOrder, request.order_id)
            if planned is None:
                raise NotFound(f"no plan for order {request.order_id!r}")
            created = order_pb2.OrderCreated()
            created.ParseFromString(planned.created)
            operation, params = Operation.from_proto(created.operation), created.circuit
        elif request.WhichOneof("target") == "circuit_id":
            params = _params(self._intended(request.circuit_id))
            operation = Operation.from_proto(request.operation)
            if operation is Operation.MODIFY:
                if not request.HasField("bandwidth_mbps"):
                    raise InvalidArgument.for_field("bandwidth_mbps", "required for MODIFY")
                params.bandwidth_mbps = request.bandwidth_mbps
        else:
            raise InvalidArgument.for_field("target", "set order_id or circuit_id")
        payloads = self._coordinator.payloads(operation, params)
        return pb.DryRunResponse(
            payloads=payloads,
            routers=[self._dry_run(operation, params, payload) for payload in payloads],
        )

    def _dry_run(
        self,
        operation: Operation,
        params: common_pb2.CircuitParameters,
        payload: router_payload_pb2.RouterPayload,
    ) -> pb.RouterDryRun:
        """What ``payload`` would change on its router, against running as read now."""
        side = Side.from_proto(payload.side)
        end = circuit_end(params, side)
        found = pb.RouterDryRun(device_name=end.router_name, side=side.value, payload=payload)
        device = self._inventory.get(end.router_name)
        if device is None:
            raise FailedPrecondition(f"router {end.router_name!r} is not in the inventory")
        found.read_time.CopyFrom(to_timestamp(utcnow()))
        try:
            running = running_subinterfaces(device.platform, read_running(device))
        except RouterFailure as exc:
            found.error.CopyFrom(exc.fault.to_proto())
            return found
        have = running.get((end.interface, end.vlan))
        if have is not None:
            found.running_config = "\n".join(f"{p} = {v}" for p, v in sorted(have.items()))
        target = None if operation is Operation.DELETE else intended_leaves(device.platform, end)
        found.differences.extend(
            pb.ConfigDifference(path=d.path, intended=d.intended, actual=d.actual)
            for d in differences(target, have)
        )
        return found

    def CheckSync(self, request: pb.CheckSyncRequest, context: Any) -> pb.CheckSyncResponse:
        require_role(*OPS_ROLES)
        names = set(request.device_names)
        unknown = names - {d.name for d in self._inventory}
        if unknown:
            raise NotFound(f"unknown devices: {', '.join(sorted(unknown))}")
        with self._factory() as session:
            active = [_params(r) for r in self._active(session)]
        response = pb.CheckSyncResponse()
        for device in self._inventory:
            if names and device.name not in names:
                continue
            response.devices.append(self._sync_status(device, active))
        return response

    def _sync_status(
        self, device: Device, active: list[common_pb2.CircuitParameters]
    ) -> pb.DeviceSyncStatus:
        status = pb.DeviceSyncStatus(device_name=device.name, side=device.side.value)
        status.check_time.CopyFrom(to_timestamp(utcnow()))
        try:
            running = running_subinterfaces(device.platform, read_running(device))
        except RouterFailure as exc:
            status.error.CopyFrom(exc.fault.to_proto())
            return status
        intended_keys = set()
        for params in active:
            end = circuit_end(params, device.side)
            if end.router_name != device.name:
                continue
            key = (end.interface, end.vlan)
            intended_keys.add(key)
            have = running.get(key)
            if have is None:
                status.missing_circuit_ids.append(params.circuit_id)
                continue
            diff = differences(intended_leaves(device.platform, end), have)
            if diff:
                status.different.append(
                    pb.CircuitDrift(
                        circuit_id=params.circuit_id,
                        differences=[
                            pb.ConfigDifference(path=d.path, intended=d.intended, actual=d.actual)
                            for d in diff
                        ],
                    )
                )
        for key, leaves in sorted(running.items()):
            if key not in intended_keys:
                status.extra_circuit_ids.append(circuit_id_of(leaves) or f"{key[0]}.{key[1]}")
        status.in_sync = not (
            status.missing_circuit_ids or status.extra_circuit_ids or status.different
        )
        return status

    def ListSyncStatus(
        self, request: pb.ListSyncStatusRequest, context: Any
    ) -> pb.ListSyncStatusResponse:
        require_role(*OPS_ROLES)
        page = _page(request.page_size, request.page_token, SYNC_PAGE_SIZE)
        rows, next_page_token = page_of(
            sync_statuses(self._factory, request.circuit_id, request.not_in_sync_only,
                          page.after, page.limit + 1),
            page, lambda row: (row.circuit_id, row.side))
        return pb.ListSyncStatusResponse(
            statuses=[sync_status_proto(row) for row in rows],
            interval_seconds=self._drift_interval_s,
            next_page_token=next_page_token,
        )

    def Redeploy(self, request: pb.RedeployRequest, context: Any) -> pb.RedeployResponse:
        principal = require_role(*OPS_ROLES)
        return self._repairs.request(principal, request.circuit_id, request.dry_run)

    def ListRepairs(self, request: pb.ListRepairsRequest, context: Any) -> pb.ListRepairsResponse:
        require_role(*OPS_ROLES)
        page = _page(request.page_size, request.page_token, REPAIR_PAGE_SIZE)
        repairs, next_page_token = self._repairs.list(request.circuit_id, request.pending_only,
                                                      page)
        return pb.ListRepairsResponse(repairs=repairs, next_page_token=next_page_token)

    def ApproveRepair(
        self, request: pb.ApproveRepairRequest, context: Any
    ) -> pb.ApproveRepairResponse:
        principal = require_role(*OPS_ROLES)
        return pb.ApproveRepairResponse(
            repair=self._repairs.approve(
                principal, request.repair_id, request.payload_sha256, request.comment
            )
        )

    def RejectRepair(
        self, request: pb.RejectRepairRequest, context: Any
    ) -> pb.RejectRepairResponse:
        principal = require_role(*OPS_ROLES)
        return pb.RejectRepairResponse(
            repair=self._repairs.reject(principal, request.repair_id, request.reason)
        )

    def GetCircuitConfig(
        self, request: pb.GetCircuitConfigRequest, context: Any
    ) -> pb.GetCircuitConfigResponse:
        require_role(*OPS_ROLES)
        with self._factory() as session:
            row = session.get(IntendedCircuit, request.circuit_id)
            entries = list(
                session.scalars(
                    select(LogEntry)
                    .where(LogEntry.circuit_id == request.circuit_id)
                    .order_by(LogEntry.id)
                )
            )
        if row is None and not entries:
            raise NotFound(f"circuit {request.circuit_id!r} is unknown")
        response = pb.GetCircuitConfigResponse()
        if row is not None and row.status == ACTIVE:
            params = _params(row)
            for side in (Side.SINGAPORE, Side.CHONGQING):
                response.configs.append(self._router_config(params, side))
        for entry in entries:
            fields: dict[str, Any] = {
                "saga_id": entry.saga_id,
                "order_id": entry.order_id,
                "operation": entry.operation,
                "step": entry.step,
                "device_name": entry.router_name,
                "side": entry.side,
                "outcome": entry.outcome,
                "payload_sha256": entry.payload_sha256,
                "persist_id": entry.persist_id,
                "message": entry.message,
                "actor": entry.actor,
            }
            item = pb.ProvisioningLogEntry(**fields)
            item.time.CopyFrom(to_timestamp(entry.time))
            if entry.error:
                item.error.ParseFromString(entry.error)
            response.log.append(item)
        return response

    def _router_config(
        self, params: common_pb2.CircuitParameters, side: Side
    ) -> pb.RouterCircuitConfig:
        end = circuit_end(params, side)
        device = self._inventory.get(end.router_name)
        if device is None:
            raise FailedPrecondition(f"router {end.router_name!r} is not in the inventory")
        intended = self._renderer.router_payload(
            device.platform, device.telco, side, Operation.MODIFY, end
        )
        config = pb.RouterCircuitConfig(device_name=device.name, side=side.value, intended=intended)
        config.read_time.CopyFrom(to_timestamp(utcnow()))
        try:
            running = running_subinterfaces(device.platform, read_running(device))
        except RouterFailure as exc:
            config.error.CopyFrom(exc.fault.to_proto())
            return config
        have = running.get((end.interface, end.vlan))
        if have is not None:
            config.running_config = "\n".join(f"{p} = {v}" for p, v in sorted(have.items()))
        config.in_sync = not differences(intended_leaves(device.platform, end), have)
        return config
