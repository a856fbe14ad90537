"""OpenTelemetry tracer and meter providers, configured from the standard ``OTEL_*`` variables.

No exporter by default (spans still carry ids for logs and Kafka headers). Set
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` to ``console`` or ``otlp`` to export;
the OTLP exporter reads ``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends itself.

``IDC_METRICS_LISTEN`` (host:port) serves the metrics in Prometheus format at
``http://host:port/metrics``, with the standard process and Python runtime metrics.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)

from services.common.config import ConfigError
from services.common.metrics import histogram_views

log = logging.getLogger(__name__)

_EXPORTERS = ("none", "console", "otlp")


def _exporter_name(env: Mapping[str, str], variable: str) -> str:
    name = env.get(variable, "none").strip().lower() or "none"
    if name not in _EXPORTERS:
        choices = ", ".join(_EXPORTERS)
        raise ConfigError(f"{variable}={name!r} is not supported: use one of {choices}")
    return name


def _span_exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


def _metric_exporter(name: str) -> MetricExporter | None:
    if name == "console":
        return ConsoleMetricExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    return None


def metrics_listen(env: Mapping[str, str]) -> tuple[str, int] | None:
    """``IDC_METRICS_LISTEN`` as (host, port); None when unset (no endpoint)."""
    raw = env.get("IDC_METRICS_LISTEN", "").strip()
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"IDC_METRICS_LISTEN={raw!r} is not valid: expected host:port")
    return host, int(port)


class MetricsEndpoint:
    """The Prometheus HTTP endpoint of this process."""

    def __init__(self, host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.reader = PrometheusMetricReader(registry=self.registry)
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        # Port 0 binds a free port; the URL names the one bound.
        self.url = f"http://{host}:{self._server.server_address[1]}/metrics"
        log.info("metrics at %s", self.url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Telemetry:
    """The process's providers; ``shutdown`` flushes what is buffered."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        endpoint: MetricsEndpoint | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.endpoint = endpoint

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self.endpoint is not None:
            self.endpoint.close()


def configure_telemetry(service: str, env: Mapping[str, str] | None = None) -> Telemetry:
    env = os.environ if env is None else env
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured by Resource.create.
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", f"idc-{service}")})

    tracer_provider = TracerProvider(resource=resource)
    span_exporter = _span_exporter(_exporter_name(env, "OTEL_TRACES_EXPORTER"))
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))

    metric_exporter = _metric_exporter(_exporter_name(env, "OTEL_METRICS_EXPORTER"))
    readers: list[MetricReader] = (
        [PeriodicExportingMetricReader(metric_exporter)] if metric_exporter else []
    )
    listen = metrics_listen(env)
    endpoint = MetricsEndpoint(*listen) if listen else None
    if endpoint is not None:
        readers.append(endpoint.reader)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, views=histogram_views()
    )

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider, endpoint)
