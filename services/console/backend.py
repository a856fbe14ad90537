"""The console's only source of data: the order and provisioning services' gRPC APIs,
called with the signed-in person's own token (so every rule is the API's, not ours)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from grpc import aio

from idc.ops.v1 import approval_service_pb2 as approvals_pb
from idc.ops.v1 import approval_service_pb2_grpc as approvals_grpc
from idc.order.v1 import capacity_pb2, circuit_pb2, order_pb2
from idc.order.v1 import order_service_pb2 as orders_pb
from idc.order.v1 import order_service_pb2_grpc as orders_grpc
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from idc.provisioning.v1 import provisioning_service_pb2_grpc as prov_grpc
from services.common.grpc_server import call_metadata
from services.common.order_watch import watch_order_async

PAGE_SIZE = 1000
# More than this many circuits or orders are not read into one page of the console.
MAX_ITEMS = 10_000


class Refused(Exception):
    """A service refused a call; ``message`` is its own words, for the person to act on."""

    def __init__(self, service: str, code: str, message: str) -> None:
        super().__init__(f"{service}: {code}: {message}")
        self.service = service
        self.code = code
        self.message = message

    @property
    def permission(self) -> bool:
        return self.code in {"PERMISSION_DENIED", "UNAUTHENTICATED"}


class Backend(Protocol):
    async def pending(self, token: str) -> list[approvals_pb.PendingApproval]: ...
    async def approve(self, token: str, order_id: str, payload_sha256: str,
                      comment: str) -> order_pb2.Order: ...
    async def reject(self, token: str, order_id: str, reason: str) -> order_pb2.Order: ...
    async def order(self, token: str, order_id: str) -> order_pb2.Order: ...
    def watch(self, token: str, order_id: str) -> AsyncIterator[orders_pb.WatchOrderResponse]: ...
    async def circuit(self, token: str, circuit_id: str) -> circuit_pb2.Circuit: ...
    async def circuits(self, token: str) -> list[circuit_pb2.Circuit]: ...
    async def completed_orders(self, token: str) -> list[order_pb2.Order]: ...
    async def capacity(self, token: str) -> capacity_pb2.Capacity: ...
    async def check_sync(self, token: str,
                         device_names: Sequence[str] = ()) -> list[prov_pb.DeviceSyncStatus]: ...
    async def devices(self, token: str) -> list[prov_pb.Device]: ...
    async def redeploy(self, token: str, circuit_id: str) -> prov_pb.RedeployResponse: ...
    async def circuit_config(self, token: str,
                             circuit_id: str) -> prov_pb.GetCircuitConfigResponse: ...
    async def dry_run(self, token: str, order_id: str) -> prov_pb.DryRunResponse: ...
    async def sync_statuses(self, token: str, circuit_id: str = "",
                            not_in_sync_only: bool = False
                            ) -> list[prov_pb.CircuitSyncStatus]: ...


def _refused(service: str, error: aio.AioRpcError) -> Refused:
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Refused(service, code.name, f"the {service} service does not answer "
                       f"({error.details() or code.name.lower()}); try again shortly")
    return Refused(service, code.name, error.details() or code.name.lower())


T = TypeVar("T")


async def _collect(fetch_page: Callable[[str], Awaitable[tuple[Sequence[T], str]]]) -> list[T]:
    """Every item of a paginated order-service list, up to MAX_ITEMS."""
    found: list[T] = []
    page = ""
    try:
        while len(found) < MAX_ITEMS:
            items, page = await fetch_page(page)
            found += items
            if not page:
                break
    except aio.AioRpcError as error:
        raise _refused("order", error) from None
    return found


class GrpcBackend:
    """Async gRPC clients of both services; create inside the running event loop."""

    def __init__(self, order_address: str, provisioning_address: str,
                 timeout_s: float) -> None:
        self._order_channel = aio.insecure_channel(order_address)
        self._provisioning_channel = aio.insecure_channel(provisioning_address)
        self._orders = orders_grpc.OrderServiceStub(self._order_channel)
        self._approvals = approvals_grpc.ApprovalServiceStub(self._order_channel)
        self._provisioning = prov_grpc.ProvisioningServiceStub(self._provisioning_channel)
        self._timeout = timeout_s

    async def close(self) -> None:
        await self._order_channel.close(None)
        await self._provisioning_channel.close(None)

    # -- order service -----------------------------------------------------------------

    async def pending(self, token: str) -> list[approvals_pb.PendingApproval]:
        async def page(page_token: str) -> tuple[Sequence[approvals_pb.PendingApproval], str]:
            reply = await self._approvals.ListPendingApprovals(
                approvals_pb.ListPendingApprovalsRequest(page_size=PAGE_SIZE,
                                                         page_token=page_token),
                metadata=call_metadata(token), timeout=self._timeout)
            return reply.pending_approvals, reply.next_page_token

        return await _collect(page)

    async def approve(self, token: str, order_id: str, payload_sha256: str,
                      comment: str) -> order_pb2.Order:
        try:
            reply = await self._approvals.Approve(
                approvals_pb.ApproveRequest(order_id=order_id, payload_sha256=payload_sha256,
                                            comment=comment),
                metadata=call_metadata(token), timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("order", error) from None
        return reply.order

    async def reject(self, token: str, order_id: str, reason: str) -> order_pb2.Order:
        try:
            reply = await self._approvals.Reject(
                approvals_pb.RejectRequest(order_id=order_id, reason=reason),
                metadata=call_metadata(token), timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("order", error) from None
        return reply.order

    async def order(self, token: str, order_id: str) -> order_pb2.Order:
        try:
            reply = await self._orders.GetOrder(orders_pb.GetOrderRequest(order_id=order_id),
                                                metadata=call_metadata(token),
                                                timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("order", error) from None
        return reply.order

    async def watch(self, token: str,
                    order_id: str) -> AsyncIterator[orders_pb.WatchOrderResponse]:
        # No deadline: the stream lasts while someone watches; the server ends it when the
        # order is final or its stream lifetime passed (then it is opened again), and
        # leaving the page cancels it.
        calls: list[Any] = []

        def open_stream() -> AsyncIterator[orders_pb.WatchOrderResponse]:
            call = self._orders.WatchOrder(orders_pb.WatchOrderRequest(order_id=order_id),
                                           metadata=call_metadata(token))
            calls.append(call)
            return aiter(call)

        try:
            async for message in watch_order_async(open_stream):
                yield message
        except aio.AioRpcError as error:
            raise _refused("order", error) from None
        finally:
            for call in calls:
                call.cancel()

    async def circuit(self, token: str, circuit_id: str) -> circuit_pb2.Circuit:
        try:
            reply = await self._orders.GetCircuit(
                orders_pb.GetCircuitRequest(circuit_id=circuit_id),
                metadata=call_metadata(token), timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("order", error) from None
        return reply.circuit

    async def circuits(self, token: str) -> list[circuit_pb2.Circuit]:
        async def page(page_token: str) -> tuple[Sequence[circuit_pb2.Circuit], str]:
            reply = await self._orders.ListCircuits(
                orders_pb.ListCircuitsRequest(page_size=PAGE_SIZE, page_token=page_token),
                metadata=call_metadata(token), timeout=self._timeout)
            return reply.circuits, reply.next_page_token

        return await _collect(page)

    async def completed_orders(self, token: str) -> list[order_pb2.Order]:
        async def page(page_token: str) -> tuple[Sequence[order_pb2.Order], str]:
            reply = await self._orders.ListOrders(
                orders_pb.ListOrdersRequest(page_size=PAGE_SIZE, page_token=page_token,
                                            states=[order_pb2.ORDER_STATE_COMPLETED]),
                metadata=call_metadata(token), timeout=self._timeout)
            return reply.orders, reply.next_page_token

        return await _collect(page)

    async def capacity(self, token: str) -> capacity_pb2.Capacity:
        try:
            reply = await self._orders.GetCapacity(orders_pb.GetCapacityRequest(),
                                                   metadata=call_metadata(token),
                                                   timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("order", error) from None
        return reply.capacity

    # -- provisioning service ----------------------------------------------------------

    async def devices(self, token: str) -> list[prov_pb.Device]:
        try:
            reply = await self._provisioning.ListDevices(
                prov_pb.ListDevicesRequest(), metadata=call_metadata(token),
                timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("provisioning", error) from None
        return list(reply.devices)

    async def check_sync(self, token: str,
                         device_names: Sequence[str] = ()) -> list[prov_pb.DeviceSyncStatus]:
        try:
            reply = await self._provisioning.CheckSync(
                prov_pb.CheckSyncRequest(device_names=list(device_names)),
                metadata=call_metadata(token), timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("provisioning", error) from None
        return list(reply.devices)

    async def redeploy(self, token: str, circuit_id: str) -> prov_pb.RedeployResponse:
        try:
            reply: prov_pb.RedeployResponse = await self._provisioning.Redeploy(
                prov_pb.RedeployRequest(circuit_id=circuit_id),
                metadata=call_metadata(token), timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("provisioning", error) from None
        return reply

    async def circuit_config(self, token: str,
                             circuit_id: str) -> prov_pb.GetCircuitConfigResponse:
        try:
            reply: prov_pb.GetCircuitConfigResponse = await self._provisioning.GetCircuitConfig(
                prov_pb.GetCircuitConfigRequest(circuit_id=circuit_id),
                metadata=call_metadata(token), timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("provisioning", error) from None
        return reply

    async def dry_run(self, token: str, order_id: str) -> prov_pb.DryRunResponse:
        try:
            reply: prov_pb.DryRunResponse = await self._provisioning.DryRun(
                prov_pb.DryRunRequest(order_id=order_id), metadata=call_metadata(token),
                timeout=self._timeout)
        except aio.AioRpcError as error:
            raise _refused("provisioning", error) from None
        return reply

    async def sync_statuses(self, token: str, circuit_id: str = "",
                            not_in_sync_only: bool = False
                            ) -> list[prov_pb.CircuitSyncStatus]:
        """What the drift watch last saw, per circuit and router (every page of it)."""
        found: list[prov_pb.CircuitSyncStatus] = []
        page = ""
        try:
            while len(found) < MAX_ITEMS:
                reply = await self._provisioning.ListSyncStatus(
                    prov_pb.ListSyncStatusRequest(circuit_id=circuit_id, page_token=page,
                                                  not_in_sync_only=not_in_sync_only),
                    metadata=call_metadata(token), timeout=self._timeout)
                found += reply.statuses
                page = reply.next_page_token
                if not page:
                    break
        except aio.AioRpcError as error:
            raise _refused("provisioning", error) from None
        return found
