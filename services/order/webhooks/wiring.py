"""Building the webhook parts of the order service from its settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.common.grpc_server import Worker
from services.common.runtime import ServiceRuntime
from services.order.contacts import ContactCipher
from services.order.settings import OrderSettings
from services.order.webhooks.delivery import DeliverySender, DeliveryWorker
from services.order.webhooks.domain import RetryPolicy
from services.order.webhooks.fanout import fanout_worker
from services.order.webhooks.sender import HttpsPoster, tls_context
from services.order.webhooks.servicer import WebhookServicer
from services.order.webhooks.store import SecretBox
from services.order.webhooks.subscriptions import Webhooks


@dataclass(frozen=True)
class WebhookParts:
    webhooks: Webhooks  # the use cases, for the REST hub too
    servicer: WebhookServicer
    workers: list[Worker]


def retry_policy(settings: OrderSettings) -> RetryPolicy:
    return RetryPolicy(first_s=settings.webhook_retry_first_s,
                       max_s=settings.webhook_retry_max_s,
                       give_up_after_s=settings.webhook_give_up_s)


def webhook_parts(runtime: ServiceRuntime, settings: OrderSettings, cipher: ContactCipher,
                  clock: Callable[[], datetime]) -> WebhookParts:
    factory = runtime.session_factory
    box = SecretBox(cipher)
    poster = HttpsPoster(tls_context(settings.webhook_ca_file), settings.webhook_timeout_s)
    sender = DeliverySender(factory, poster, box, retry_policy(settings), clock)
    webhooks = Webhooks(factory, box, clock)
    return WebhookParts(
        webhooks=webhooks, servicer=WebhookServicer(webhooks),
        workers=[
            fanout_worker(factory, runtime.settings.kafka, settings.consumer_group + "-webhooks",
                          clock),
            DeliveryWorker(sender, settings.webhook_poll_ms / 1000),
        ],
    )
