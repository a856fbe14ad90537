# ruff: noqa: N802 - method names are the gRPC contract's
"""gRPC adapters: OrderService and ApprovalService. Access rules live here; the use cases
in services.order.orders (placing, changing, approving), decisions in services.order.domain.

Who may do what: customers act on their own tenant only (another tenant's order or
circuit answers NOT_FOUND, exactly like a missing id); ops read everything and decide
approvals for their own telco; billing admins and admins read everything. An order's
contacts are filled in only for the principals services.order.domain.disclosure allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC

import grpc

from idc.ops.v1 import approval_service_pb2, approval_service_pb2_grpc
from idc.order.v1 import (
    capacity_pb2,
    order_pb2,
    order_service_pb2,
    order_service_pb2_grpc,
    site_pb2,
)
from idc.type.v1 import router_payload_pb2
from services.common import streams
from services.common.auth import Principal, Role, current_principal, require_role
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.paging import checked, page_of
from services.order import access, approval_log, convert, store
from services.order.domain.lifecycle import OrderState
from services.order.orders import OrderApp

WATCH_POLL_S = 1.0


class OrderServicer(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(self, app: OrderApp) -> None:
        self.app = app

    def ListSites(self, request: order_service_pb2.ListSitesRequest,
                  context: grpc.ServicerContext) -> order_service_pb2.ListSitesResponse:
        principal = current_principal()
        side = convert.side_from_proto(request.side)
        page = store.page(request.page_size, request.page_token)
        figures = self.app.capacity()
        catalogue = self.app.catalogue
        sites = [s for s in sorted(catalogue.sites.values(), key=lambda s: s.id)
                 if (side is None or s.side is side)
                 and catalogue.offered_to(s, access.scope(principal))
                 and (page.after is None or (s.id,) > checked(page.after, str))]
        shown, next_page_token = page_of(sites, page, lambda site: (site.id,))
        response = order_service_pb2.ListSitesResponse(next_page_token=next_page_token)
        for site in shown:
            message = site_pb2.Site(
                id=site.id, name=site.name, side=convert.side_proto(site.side),
                telco_id=site.telco.id, telco_name=site.telco.name, city=site.city,
                router_name=site.router, sandbox=site.sandbox)
            pool = figures.channels.of(site.sandbox)
            for port in site.ports:
                if not port.visible_to(access.scope(principal)):
                    continue
                message.ports.append(site_pb2.Port(
                    id=port.id, site_id=site.id, name=port.name, speed_mbps=port.speed_mbps,
                    free_mbps=min(figures.ports[port.id].free_mbps, pool.free_mbps),
                    vlan_range=site_pb2.VlanRange(first=port.vlan_first, last=port.vlan_last),
                    free_vlan_count=port.vlan_count - figures.used_vlans.get(port.id, 0),
                    tenant_id=port.tenant))
            response.sites.append(message)
        return response

    def GetQuote(self, request: order_service_pb2.GetQuoteRequest,
                 context: grpc.ServicerContext) -> order_service_pb2.GetQuoteResponse:
        principal = require_role(Role.CUSTOMER)
        return order_service_pb2.GetQuoteResponse(quote=convert.quote(
            request.spec, *self.app.placing.quote(principal, request.spec),
            sandbox=self.app.catalogue.is_sandbox_port(request.spec.a_end_port_id)))

    def CreateOrder(self, request: order_service_pb2.CreateOrderRequest,
                    context: grpc.ServicerContext) -> order_service_pb2.CreateOrderResponse:
        principal = require_role(Role.CUSTOMER)
        return order_service_pb2.CreateOrderResponse(
            order=self._shown(principal, self.app.placing.create_order(principal, request)))

    def ModifyBandwidth(self, request: order_service_pb2.ModifyBandwidthRequest,
                        context: grpc.ServicerContext
                        ) -> order_service_pb2.ModifyBandwidthResponse:
        principal = require_role(Role.CUSTOMER)
        access.require_id(request.circuit_id, "circuit_id", "circuit")
        return order_service_pb2.ModifyBandwidthResponse(
            order=self._shown(principal, self.app.changing.modify_bandwidth(principal, request)))

    def DisconnectCircuit(self, request: order_service_pb2.DisconnectCircuitRequest,
                          context: grpc.ServicerContext
                          ) -> order_service_pb2.DisconnectCircuitResponse:
        principal = require_role(Role.CUSTOMER)
        access.require_id(request.circuit_id, "circuit_id", "circuit")
        return order_service_pb2.DisconnectCircuitResponse(
            order=self._shown(principal, self.app.changing.disconnect(principal, request)))

    def PreviewChange(self, request: order_service_pb2.PreviewChangeRequest,
                      context: grpc.ServicerContext) -> order_service_pb2.PreviewChangeResponse:
        principal = require_role(Role.CUSTOMER)
        access.require_id(request.circuit_id, "circuit_id", "circuit")
        change = request.WhichOneof("change")
        if change is None:
            raise InvalidArgument.for_field("change", "give either modify or disconnect")
        zone = convert.time_zone(request.time_zone, "time_zone")
        bandwidth, burst = None, None
        if change == "modify":
            bandwidth = request.modify.bandwidth_mbps
            if request.modify.HasField("burst_mbps"):
                burst = request.modify.burst_mbps
        preview = self.app.changing.preview(principal, request.circuit_id, bandwidth, burst,
                                            zone)
        return order_service_pb2.PreviewChangeResponse(preview=convert.change_preview(
            preview.circuit, preview.money_after, preview.figures))

    def CancelOrder(self, request: order_service_pb2.CancelOrderRequest,
                    context: grpc.ServicerContext) -> order_service_pb2.CancelOrderResponse:
        principal = require_role(Role.CUSTOMER, Role.ADMIN)
        access.require_id(request.order_id, "order_id", "order")
        return order_service_pb2.CancelOrderResponse(order=self._shown(
            principal, self.app.changing.cancel(principal, request.order_id, request.reason)))

    def GetOrder(self, request: order_service_pb2.GetOrderRequest,
                 context: grpc.ServicerContext) -> order_service_pb2.GetOrderResponse:
        principal = current_principal()
        access.require_id(request.order_id, "order_id", "order")
        with self.app.uow.read_one_statement() as session:
            row, approvals, audit = store.order_with_history(
                session, request.order_id, access.scope(principal))
        order = convert.order_message(row, approvals, audit)
        self.app.contacts.reveal_rows(principal, [(order, row)])
        return order_service_pb2.GetOrderResponse(order=order)

    def ListOrders(self, request: order_service_pb2.ListOrdersRequest,
                   context: grpc.ServicerContext) -> order_service_pb2.ListOrdersResponse:
        principal = current_principal()
        tenant = access.tenant_filter(principal, request.tenant_id)
        states = convert.order_states_from_proto(list(request.states), "states")
        order_type = convert.order_type_from_proto(request.type, "type")
        page = store.page(request.page_size, request.page_token)
        with self.app.uow.read_one_statement() as session:
            orders, next_page_token = store.list_orders(
                session, page, tenant=tenant, states=states, order_type=order_type,
                circuit_id=request.circuit_id)
        messages = [convert.order_message(*order) for order in orders]
        self.app.contacts.reveal_rows(
            principal, [(m, order[0]) for m, order in zip(messages, orders, strict=True)])
        return order_service_pb2.ListOrdersResponse(
            orders=messages, next_page_token=next_page_token)

    def WatchOrder(self, request: order_service_pb2.WatchOrderRequest,
                   context: grpc.ServicerContext
                   ) -> Iterator[order_service_pb2.WatchOrderResponse]:
        principal = current_principal()
        access.require_id(request.order_id, "order_id", "order")
        notifier = self.app.uow.notifier
        context.add_callback(notifier.notify)  # wake the wait below when the client leaves
        seen_version: int | None = None
        seen_entries = 0
        # The stream's lifetime (services/common/streams.py) ends it with OK before the order
        # is final; the client opens it again and gets the current state first.
        while context.is_active() and not streams.ended():
            generation = notifier.generation
            # A short-lived session per look: no connection is held while waiting.
            with self.app.uow.read() as session:
                row = store.get_order(session, request.order_id, access.scope(principal))
                changed = row.version != seen_version
                order = convert.order(session, row) if changed else None
                if order is not None:
                    self.app.contacts.reveal(session, principal, [order])
            if order is not None:
                new_entries = list(order.audit_trail)[seen_entries:]
                if seen_version is None or not new_entries:
                    yield order_service_pb2.WatchOrderResponse(order=order)
                else:
                    for entry in new_entries:
                        yield order_service_pb2.WatchOrderResponse(order=order, change=entry)
                seen_version, seen_entries = row.version, len(order.audit_trail)
                if OrderState(row.state).terminal:
                    return
            left = streams.remaining_s()
            notifier.wait(generation, WATCH_POLL_S if left is None else min(WATCH_POLL_S, left))

    def _shown(self, principal: Principal, order: order_pb2.Order) -> order_pb2.Order:
        self.app.reveal(principal, order)
        return order

    def GetCircuit(self, request: order_service_pb2.GetCircuitRequest,
                   context: grpc.ServicerContext) -> order_service_pb2.GetCircuitResponse:
        principal = current_principal()
        access.require_id(request.circuit_id, "circuit_id", "circuit")
        with self.app.uow.read() as session:
            row = store.get_circuit(session, request.circuit_id, access.scope(principal))
            return order_service_pb2.GetCircuitResponse(
                circuit=convert.circuit(self.app.catalogue, row))

    def ListCircuits(self, request: order_service_pb2.ListCircuitsRequest,
                     context: grpc.ServicerContext) -> order_service_pb2.ListCircuitsResponse:
        principal = current_principal()
        tenant = access.tenant_filter(principal, request.tenant_id)
        states = convert.circuit_states_from_proto(list(request.states), "states")
        page = store.page(request.page_size, request.page_token)
        with self.app.uow.read() as session:
            rows, next_page_token = store.list_circuits(session, page, tenant=tenant,
                                                        states=states, port_id=request.port_id)
            return order_service_pb2.ListCircuitsResponse(
                circuits=[convert.circuit(self.app.catalogue, row) for row in rows],
                next_page_token=next_page_token)

    def GetCapacity(self, request: order_service_pb2.GetCapacityRequest,
                    context: grpc.ServicerContext) -> order_service_pb2.GetCapacityResponse:
        principal = current_principal()
        catalogue, scope = self.app.catalogue, access.scope(principal)
        # A sandbox tenant sees its sandbox pool and ports, every other tenant the real
        # channel and ports; staff the real channel and every port.
        sandbox = catalogue.is_sandbox_tenant(scope)
        visible = [p for p in catalogue.ports.values() if p.visible_to(scope)
                   and catalogue.offered_to(catalogue.site_of(p), scope)]
        wanted = set(request.port_ids)
        unknown = wanted - {p.id for p in visible}
        if unknown:
            raise InvalidArgument.for_field(
                "port_ids", f"unknown port(s): {', '.join(sorted(unknown))}")
        figures = self.app.capacity()
        channel = figures.channels.of(sandbox)
        message = capacity_pb2.Capacity(
            sandbox=sandbox,
            channel_capacity_mbps=channel.capacity_mbps,
            channel_committed_mbps=channel.committed_mbps,
            channel_reserved_mbps=channel.reserved_mbps,
            channel_free_mbps=channel.free_mbps,
            read_time=convert.timestamp(self.app.clock()))
        for port in visible:
            if wanted and port.id not in wanted:
                continue
            headroom = figures.ports[port.id]
            used = figures.used_vlans.get(port.id, 0)
            message.ports.append(capacity_pb2.PortCapacity(
                port_id=port.id, site_id=port.site_id,
                side=convert.side_proto(catalogue.side_of(port)), speed_mbps=port.speed_mbps,
                committed_mbps=headroom.committed_mbps, reserved_mbps=headroom.reserved_mbps,
                free_mbps=headroom.free_mbps, used_vlan_count=used,
                free_vlan_count=port.vlan_count - used))
        response = order_service_pb2.GetCapacityResponse(capacity=message)
        if request.HasField("end_time"):
            response.timeline.extend(convert.capacity_interval(interval) for interval in
                                     self.app.capacity_timeline(
                [p.port_id for p in message.ports],
                request.start_time.ToDatetime(tzinfo=UTC)
                if request.HasField("start_time") else None,
                request.end_time.ToDatetime(tzinfo=UTC), message.sandbox))
        elif request.HasField("start_time"):
            raise InvalidArgument.for_field("end_time", "is required with start_time: the "
                                            "timeline runs from start_time to end_time")
        return response


class ApprovalServicer(approval_service_pb2_grpc.ApprovalServiceServicer):
    def __init__(self, app: OrderApp) -> None:
        self.app = app

    def ListPendingApprovals(self, request: approval_service_pb2.ListPendingApprovalsRequest,
                             context: grpc.ServicerContext
                             ) -> approval_service_pb2.ListPendingApprovalsResponse:
        principal = require_role(Role.OPS)
        side = self.app.catalogue.side_of_telco(principal.telco or "")
        if side is None:
            raise PermissionDenied(f"telco {principal.telco!r} runs no side of this channel")
        page = store.page(request.page_size, request.page_token)
        with self.app.uow.read() as session:
            rows, next_page_token = store.awaiting_approval(session, side, page)
            response = approval_service_pb2.ListPendingApprovalsResponse(
                next_page_token=next_page_token)
            for row in rows:
                item = approval_service_pb2.PendingApproval(
                    order=convert.order(session, row),
                    expire_time=convert.timestamp(row.approval_expire_at),
                    sandbox=self.app.catalogue.is_sandbox_port(row.a_port_id))
                self.app.contacts.reveal(session, principal, [item.order])
                plan = store.plans(session, row.id).get(side.value)
                if plan is not None:
                    item.payload.CopyFrom(router_payload_pb2.RouterPayload.FromString(plan.payload))
                response.pending_approvals.append(item)
            return response

    def Approve(self, request: approval_service_pb2.ApproveRequest,
                context: grpc.ServicerContext) -> approval_service_pb2.ApproveResponse:
        principal = require_role(Role.OPS)
        access.require_id(request.order_id, "order_id", "order")
        if not request.payload_sha256:
            raise InvalidArgument.for_field(
                "payload_sha256", "is required: the sha256 of the payload you reviewed")
        order = self.app.approving.approve(principal, request.order_id, request.payload_sha256,
                                           request.comment, request.revert_payload_sha256)
        self.app.reveal(principal, order)
        return approval_service_pb2.ApproveResponse(order=order)

    def Reject(self, request: approval_service_pb2.RejectRequest,
               context: grpc.ServicerContext) -> approval_service_pb2.RejectResponse:
        principal = require_role(Role.OPS)
        access.require_id(request.order_id, "order_id", "order")
        order = self.app.approving.reject(principal, request.order_id, request.reason)
        self.app.reveal(principal, order)
        return approval_service_pb2.RejectResponse(order=order)

    def ListApprovalHistory(self, request: approval_service_pb2.ListApprovalHistoryRequest,
                            context: grpc.ServicerContext
                            ) -> approval_service_pb2.ListApprovalHistoryResponse:
        require_role(Role.OPS, Role.ADMIN)
        access.require_id(request.order_id, "order_id", "order")
        page = store.page(request.page_size, request.page_token)
        with self.app.uow.read() as session:
            store.get_order(session, request.order_id, None)
            rows, next_page_token = approval_log.history(session, request.order_id, page)
        return approval_service_pb2.ListApprovalHistoryResponse(
            decisions=[convert.approval_decision(row) for row in rows],
            next_page_token=next_page_token)


