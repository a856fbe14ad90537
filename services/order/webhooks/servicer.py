# ruff: noqa: N802 - method names are the gRPC contract's
"""gRPC adapter of WebhookService: customers only, each on its own tenant."""

from __future__ import annotations

from datetime import UTC

import grpc

from idc.order.v1 import webhook_service_pb2 as pb
from idc.order.v1 import webhook_service_pb2_grpc as pb_grpc
from services.common.auth import Role, require_role
from services.common.errors import InvalidArgument, PermissionDenied
from services.order import convert
from services.order.webhooks.subscriptions import Webhooks
from services.order.webhooks.tables import AttemptRow, DeliveryRow, SubscriptionRow

DEFAULT_PAGE, MAX_PAGE = 50, 1000
_STATES = {"PENDING": pb.WebhookDelivery.STATE_PENDING,
           "DELIVERED": pb.WebhookDelivery.STATE_DELIVERED,
           "FAILED": pb.WebhookDelivery.STATE_FAILED}


def caller_tenant() -> str:
    """The calling customer's tenant (gRPC and the REST hub alike)."""
    tenant = require_role(Role.CUSTOMER).tenant
    if not tenant:
        raise PermissionDenied("webhooks belong to a tenant; this token names none")
    return tenant


def _subscription(row: SubscriptionRow) -> pb.WebhookSubscription:
    return pb.WebhookSubscription(id=row.id, url=row.url, event_types=row.event_types.split(),
                                  create_time=convert.timestamp(row.created_at))


def _delivery(row: DeliveryRow, attempts: list[AttemptRow]) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=row.id, event_id=row.event_id, event_type=row.event_type,
        circuit_id=row.circuit_id, state=_STATES[row.state],
        event_time=convert.timestamp(row.created_at),
        next_attempt_time=convert.timestamp(row.next_attempt_at),
        attempts=[pb.DeliveryAttempt(attempt=a.attempt, time=convert.timestamp(a.at),
                                     status_code=a.status_code, error=a.error,
                                     duration_ms=a.duration_ms) for a in attempts])


def _page_size(page_size: int) -> int:
    if page_size < 0 or page_size > MAX_PAGE:
        raise InvalidArgument.for_field("page_size", f"0 to {MAX_PAGE}")
    return page_size or DEFAULT_PAGE


def _page(page_size: int, page_token: str) -> tuple[int, int | None]:
    """Deliveries page by id, newest first: the token is the last id shown."""
    if page_token and not page_token.isdigit():
        raise InvalidArgument.for_field("page_token", "a next_page_token of this call")
    return _page_size(page_size), int(page_token) if page_token else None


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    def CreateSubscription(self, request: pb.CreateSubscriptionRequest,
                           context: grpc.ServicerContext) -> pb.CreateSubscriptionResponse:
        row, secret = self.webhooks.create(caller_tenant(), request.url,
                                           list(request.event_types))
        return pb.CreateSubscriptionResponse(subscription=_subscription(row), secret=secret)

    def ListSubscriptions(self, request: pb.ListSubscriptionsRequest,
                          context: grpc.ServicerContext) -> pb.ListSubscriptionsResponse:
        tenant = caller_tenant()
        limit = _page_size(request.page_size)
        rows = self.webhooks.subscriptions(tenant, request.page_token, limit + 1)
        return pb.ListSubscriptionsResponse(
            subscriptions=[_subscription(row) for row in rows[:limit]],
            next_page_token=rows[limit - 1].id if len(rows) > limit else "")

    def DeleteSubscription(self, request: pb.DeleteSubscriptionRequest,
                           context: grpc.ServicerContext) -> pb.DeleteSubscriptionResponse:
        self.webhooks.delete(caller_tenant(), request.subscription_id)
        return pb.DeleteSubscriptionResponse()

    def RotateSecret(self, request: pb.RotateSecretRequest,
                     context: grpc.ServicerContext) -> pb.RotateSecretResponse:
        return pb.RotateSecretResponse(
            secret=self.webhooks.rotate(caller_tenant(), request.subscription_id))

    def ListDeliveries(self, request: pb.ListDeliveriesRequest,
                       context: grpc.ServicerContext) -> pb.ListDeliveriesResponse:
        tenant = caller_tenant()
        limit, before_id = _page(request.page_size, request.page_token)
        found = self.webhooks.deliveries(tenant, request.subscription_id, limit + 1, before_id)
        more = len(found) > limit
        found = found[:limit]
        return pb.ListDeliveriesResponse(
            deliveries=[_delivery(row, attempts) for row, attempts in found],
            next_page_token=str(found[-1][0].id) if more else "")

    def SendTestDelivery(self, request: pb.SendTestDeliveryRequest,
                         context: grpc.ServicerContext) -> pb.SendTestDeliveryResponse:
        return pb.SendTestDeliveryResponse(
            event_id=self.webhooks.send_test(caller_tenant(), request.subscription_id))

    def ReplayDeliveries(self, request: pb.ReplayDeliveriesRequest,
                         context: grpc.ServicerContext) -> pb.ReplayDeliveriesResponse:
        if not request.HasField("since"):
            raise InvalidArgument.for_field("since", "the time to replay from")
        return pb.ReplayDeliveriesResponse(queued=self.webhooks.replay(
            caller_tenant(), request.subscription_id, request.since.ToDatetime(tzinfo=UTC)))
