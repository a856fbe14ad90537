"""Wiring of the order service process: servicers, workers, migrations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import grpc

from idc.ops.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from idc.order.v1 import (
    order_service_pb2,
    order_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from services.common.audit_keys import SIGNING_DIR, AuditKeySettings, signing_keys
from services.common.audit_servicer import register_audit
from services.common.call_limits import LimitSettings
from services.common.grpc_server import GrpcApp, Worker
from services.common.runtime import ServiceRuntime, build_app, run_service
from services.common.service_table import ORDER
from services.common.servicers import register
from services.order.audit import order_chain
from services.order.contacts import ContactCipher, ContactKeySet, load_key_set
from services.order.context import now
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.catalogue import load_catalogue
from services.order.domain.pricing import load_price_book
from services.order.metrics import register_gauges
from services.order.notifier import ChangeNotifier
from services.order.orders import OrderApp
from services.order.rest.operations import Backend
from services.order.rest.server import RestWorker, make_rest_app
from services.order.servicers import ApprovalServicer, OrderServicer
from services.order.settings import OrderSettings
from services.order.token_issuer import TokenIssuer
from services.order.token_servicer import TokenServicer
from services.order.unit_of_work import SqlUnitOfWork
from services.order.webhooks.wiring import webhook_parts
from services.order.workers import (
    OverdueProvisioningWorker,
    approval_expiry_worker,
    circuit_event_worker,
    scheduled_start_worker,
)

MIGRATIONS = ORDER.migrations_dir


def make_order_app(runtime: ServiceRuntime, settings: OrderSettings,
                   contact_keys: ContactKeySet, clock: Callable[[], datetime] = now
                   ) -> GrpcApp:
    """``clock``: the use cases' and workers' clock; only tests pass another (in-process,
    there is no setting for it)."""
    catalogue = (load_catalogue(settings.catalogue_file) if settings.catalogue_file
                 else load_catalogue())
    app = OrderApp(SqlUnitOfWork(runtime.session_factory, ChangeNotifier()), catalogue,
                   load_price_book(), settings, clock,
                   contacts=ContactVault(ContactCipher(contact_keys), billing_telcos(catalogue)))
    token_settings = runtime.token_settings
    issuer = TokenIssuer(runtime.session_factory, token_settings.issuer_key(), token_settings)
    chain = order_chain(signing_keys(AuditKeySettings.from_env(SIGNING_DIR)))
    chain.install(runtime.session_factory)
    webhooks = webhook_parts(runtime, settings, ContactCipher(contact_keys), app.clock)

    def register_servicers(server: grpc.Server) -> Sequence[str]:
        return [
            register(server, order_service_pb2.DESCRIPTOR, "OrderService",
                     order_service_pb2_grpc.add_OrderServiceServicer_to_server,
                     OrderServicer(app)),
            register(server, approval_service_pb2.DESCRIPTOR, "ApprovalService",
                     approval_service_pb2_grpc.add_ApprovalServiceServicer_to_server,
                     ApprovalServicer(app)),
            register(server, token_service_pb2.DESCRIPTOR, "TokenService",
                     token_service_pb2_grpc.add_TokenServiceServicer_to_server,
                     TokenServicer(issuer)),
            register(server, webhook_service_pb2.DESCRIPTOR, "WebhookService",
                     webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server,
                     webhooks.servicer),
            register_audit(server, chain, runtime.session_factory),
        ]

    gauges = register_gauges(runtime.session_factory, app.clock, app.capacity)
    workers: list[Worker] = [
        circuit_event_worker(app, runtime.session_factory, runtime.settings.kafka,
                             settings.consumer_group),
        approval_expiry_worker(app, settings.expiry_interval_s),
        scheduled_start_worker(app, settings.expiry_interval_s),
        OverdueProvisioningWorker(app.outcomes, settings.expiry_interval_s),
        *webhooks.workers,
    ]
    if settings.rest_address:
        # The partner REST facade: a peer of the gRPC servicers over the same use cases.
        workers.append(RestWorker(
            make_rest_app(Backend(app, webhooks.webhooks), runtime.tokens,
                          LimitSettings.from_env()),
            settings.rest_address, runtime.settings.grace_period_s, runtime.tls))
    order_app = build_app(runtime, register_servicers, workers=workers)
    order_app.on_stop += [gauge.cancel for gauge in gauges]
    return order_app


def make_app(runtime: ServiceRuntime) -> GrpcApp:
    return make_order_app(runtime, OrderSettings.from_env(), load_key_set())


def main() -> int:
    return run_service(ORDER, make_app)
