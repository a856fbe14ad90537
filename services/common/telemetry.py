"""OpenTelemetry tracer and meter providers, configured from the standard ``OTEL_*`` variables.

No exporter by default (spans still carry ids for logs and Kafka headers). Set
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` to ``console`` or ``otlp`` to export;
the OTLP exporter reads ``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from services.common.config import ConfigError

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


class Telemetry:
    """The process's providers; ``shutdown`` flushes what is buffered."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def configure_telemetry(service: str, env: Mapping[str, str] | None = None) -> Telemetry:
    env = os.environ if env is None else env
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured by Resource.create.
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", f"idc-{service}")})

    tracer_provider = TracerProvider(resource=resource)
    span_exporter = _span_exporter(_exporter_name(env, "OTEL_TRACES_EXPORTER"))
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))

    metric_exporter = _metric_exporter(_exporter_name(env, "OTEL_METRICS_EXPORTER"))
    readers = [PeriodicExportingMetricReader(metric_exporter)] if metric_exporter else []
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider)
