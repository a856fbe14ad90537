"""Every metric the product exports, in one list: name, kind, unit, attributes, meaning.

Services create their instruments from these specs (services/common/metrics.py), README's
metrics table, the Grafana dashboards and the PrometheusRule alerts are checked against
them, and a test scrapes the running services for them. Names follow the OpenTelemetry
semantic conventions where one exists (``rpc.*``, ``messaging.*``); the rest are ``idc.*``.
The Prometheus exporter turns ``.`` into ``_``, appends the unit (``_seconds``) and
``_total`` to counters; :func:`prometheus_names` gives the exported names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class MetricKind(Enum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    # Observed when scraped (a callback reads the current value).
    GAUGE = "gauge"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: MetricKind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()

    @property
    def prometheus_name(self) -> str:
        base = self.name.replace(".", "_")
        suffix = {"s": "_seconds", "By": "_bytes", "Mbit/s": "_Mbit_per_second"}.get(
            self.unit, ""
        )
        if suffix and not base.endswith(suffix):
            base += suffix
        return base + "_total" if self.kind is MetricKind.COUNTER else base


def _counter(name: str, unit: str, description: str, *attributes: str) -> MetricSpec:
    return MetricSpec(name, MetricKind.COUNTER, unit, description, attributes)


def _histogram(name: str, description: str, *attributes: str) -> MetricSpec:
    return MetricSpec(name, MetricKind.HISTOGRAM, "s", description, attributes)


def _gauge(name: str, unit: str, description: str, *attributes: str) -> MetricSpec:
    return MetricSpec(name, MetricKind.GAUGE, unit, description, attributes)


# RPC (server side, every gRPC service); the histogram's count is the request count.
RPC_DURATION = _histogram(
    "rpc.server.call.duration",
    "gRPC calls served, by method and status code",
    "rpc.system", "rpc.method", "rpc.response.status_code",
)

# Events (every service)
OUTBOX_BACKLOG = _gauge("idc.outbox.backlog", "{row}", "outbox rows not yet sent to the broker")
OUTBOX_OLDEST_AGE = _gauge(
    "idc.outbox.oldest_unsent.age", "s", "age of the oldest outbox row not yet sent (0: none)"
)
MESSAGES_SENT = _counter(
    "messaging.client.sent.messages", "{message}", "records the outbox relay published",
    "messaging.destination.name",
)
MESSAGES_CONSUMED = _counter(
    "messaging.client.consumed.messages", "{message}",
    "records a consumer group handled (or skipped as duplicates, or dead-lettered)",
    "messaging.consumer.group.name",
)
DEAD_LETTERED = _counter(
    "idc.consumer.dead_lettered", "{message}",
    "records a consumer could not handle and sent to the topic's dead-letter topic",
    "messaging.consumer.group.name", "messaging.destination.name",
)
CONSUMER_LAG = _gauge(
    "idc.consumer.lag", "{message}", "records in a partition the group has not consumed yet",
    "messaging.consumer.group.name", "messaging.destination.name",
    "messaging.destination.partition.id",
)
PARTITIONS_ASSIGNED = _gauge(
    "idc.consumer.partitions.assigned", "{partition}", "partitions assigned to this consumer",
    "messaging.consumer.group.name",
)

# TLS (every service): a Unix timestamp, so an alert compares it with time().
TLS_CERTIFICATE_NOT_AFTER = _gauge(
    "idc.tls.certificate.not_after", "s",
    "when a certificate file the process uses expires (Unix time; the earliest of a chain)",
    "certificate",
)
# The process's copy of the revoked tokens (services/common/revocations.py): an alert can
# compare it with IDC_TOKEN_REVOCATION_STALE_S, unlike a record count, which stays 0 while
# the broker is unreachable.
TOKEN_REVOCATIONS_LAG = _gauge(
    "idc.token.revocations.lag", "s",
    "time since the token revocation reader last reached the topic's end offsets "
    "(since its start if never)",
)

# Provisioning
SAGAS_FINISHED = _counter(
    "idc.provisioning.sagas", "{saga}", "sagas finished, by outcome", "outcome"
)
SAGA_STEP_DURATION = _histogram(
    "idc.provisioning.saga.step.duration", "time a saga spent in each step", "step"
)
APPROVE_TO_ACTIVE = _histogram(
    "idc.provisioning.approve_to_active.duration",
    "from an order's approval to both routers committed",
)
PENDING_COMMITS = _gauge(
    "idc.provisioning.pending_commits", "{commit}",
    "confirmed commits the agent has made and not yet confirmed or cancelled", "router",
)
PENDING_COMMIT_AGE = _gauge(
    "idc.provisioning.pending_commit.age", "s",
    "age of the oldest pending confirmed commit (0: none)", "router",
)
ROUTER_REACHABLE = _gauge(
    "idc.provisioning.router.reachable", "1",
    "1 when the last NETCONF session to the router opened, else 0", "router",
)
CIRCUITS_OUT_OF_SYNC = _gauge(
    "idc.provisioning.circuits.out_of_sync", "{circuit}",
    "circuits whose router configuration differs from what was deployed", "router",
)

# Orders
ORDERS = _gauge("idc.orders", "{order}", "orders by state", "state")
ORDERS_PLACED = _counter(
    "idc.orders.placed", "{order}", "orders accepted through the partner API", "type"
)
ORDERS_SCHEDULE_MISSED = _counter(
    "idc.orders.schedule.missed", "{order}",
    "scheduled orders that could not start on time without a person", "reason"
)
ORDER_OLDEST_AGE = _gauge(
    "idc.orders.oldest.age", "s",
    "how long the oldest order in a waiting state has been in it (SCHEDULED: past its "
    "start; 0: none)", "state",
)
ORDER_STATE_DURATION = _histogram(
    "idc.orders.state.duration", "time orders spent in a waiting state, when they left it",
    "state",
)
CHANNEL_HEADROOM = _gauge(
    "idc.channel.headroom", "Mbit/s", "channel capacity not yet sold", "channel"
)
PORT_HEADROOM = _gauge("idc.port.headroom", "Mbit/s", "port capacity not yet sold", "port")

# Billing and metering
SAMPLES_INGESTED = _counter(
    "idc.billing.samples.ingested", "{sample}", "usage samples billing stored"
)
USAGE_CONFLICTS = _counter(
    "idc.billing.usage.conflicts", "{sample}",
    "usage samples refused because a different value was already stored",
)
INGEST_LAG = _gauge(
    "idc.billing.ingest.lag", "s",
    "per billable circuit and metered router, age of the end of the newest usage sample",
    "circuit", "router",
)
BILLING_RUN_DURATION = _histogram("idc.billing.run.duration", "billing runs, start to end")
INVOICES = _gauge("idc.billing.invoices", "{invoice}", "invoices by state", "state")
BILLING_JOBS = _gauge(
    "idc.billing.jobs", "{job}", "billing jobs (runs and closes) by kind and state",
    "kind", "state",
)
RECONCILIATION_DIFFERENCES = _gauge(
    "idc.billing.reconciliation.differences", "{circuit}",
    "per billing month last reconciled, circuits whose two ends differ beyond the tolerance",
    "month",
)
METER_POLLS = _counter(
    "idc.meter.polls", "{poll}", "counter reads of a router, by result", "router", "result"
)

CATALOGUE: tuple[MetricSpec, ...] = (
    RPC_DURATION,
    OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, MESSAGES_SENT, MESSAGES_CONSUMED, DEAD_LETTERED,
    CONSUMER_LAG, PARTITIONS_ASSIGNED,
    TLS_CERTIFICATE_NOT_AFTER, TOKEN_REVOCATIONS_LAG,
    SAGAS_FINISHED, SAGA_STEP_DURATION, APPROVE_TO_ACTIVE, PENDING_COMMITS, PENDING_COMMIT_AGE,
    ROUTER_REACHABLE, CIRCUITS_OUT_OF_SYNC,
    ORDERS, ORDERS_PLACED, ORDERS_SCHEDULE_MISSED, ORDER_OLDEST_AGE, ORDER_STATE_DURATION,
    CHANNEL_HEADROOM, PORT_HEADROOM,
    SAMPLES_INGESTED, USAGE_CONFLICTS, INGEST_LAG, BILLING_RUN_DURATION, INVOICES, METER_POLLS,
    BILLING_JOBS,
    RECONCILIATION_DIFFERENCES,
)

# What prometheus_client's default collectors export in every process.
PROCESS_METRICS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "python_gc_collections_total",
)


def prometheus_names() -> frozenset[str]:
    """Every series name a scrape can show, histogram parts included."""
    names: set[str] = set(PROCESS_METRICS)
    for spec in CATALOGUE:
        if spec.kind is MetricKind.HISTOGRAM:
            names.update(f"{spec.prometheus_name}_{part}" for part in ("bucket", "count", "sum"))
        else:
            names.add(spec.prometheus_name)
    return frozenset(names)
