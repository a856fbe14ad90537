"""The usage meter: polls the routers' interface counters of every active circuit and
publishes UsageSample events through its own outbox. Run with ``python -m services.billing.meter``.
"""
