"""Signed webhooks: tenants' HTTPS subscriptions to their circuits' events.

domain: signing, backoff and subscription rules (pure); tables/store: subscriptions, the
delivery outbox and its attempt log; fanout: the consumer that turns circuit events into
deliveries; delivery: the worker that POSTs them; servicer: the gRPC WebhookService.
"""
