"""The metric catalogue's Prometheus names are the exporter's, and the endpoint serves them."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry

from services.common import metric_catalogue as catalogue
from services.common.config import ConfigError
from services.common.metric_catalogue import CATALOGUE, MetricKind, prometheus_names
from services.common.metrics import histogram_views
from services.common.telemetry import MetricsEndpoint, metrics_listen


def exported_families(provider_registry: CollectorRegistry) -> set[str]:
    return {
        sample.name
        for family in provider_registry.collect()
        for sample in family.samples
    }


def test_every_catalogue_name_is_what_the_exporter_writes() -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry)], views=histogram_views()
    )
    meter = provider.get_meter("test")
    for spec in CATALOGUE:
        if spec.kind is MetricKind.COUNTER:
            meter.create_counter(spec.name, unit=spec.unit).add(1)
        elif spec.kind is MetricKind.HISTOGRAM:
            meter.create_histogram(spec.name, unit=spec.unit).record(0.1)
        else:
            meter.create_observable_gauge(
                spec.name, callbacks=[lambda _o: [Observation(1.0)]], unit=spec.unit
            )
    exported = exported_families(registry) - {"target_info"}
    expected = prometheus_names() - set(catalogue.PROCESS_METRICS)
    assert exported == expected
    provider.shutdown()


def test_names_are_unique() -> None:
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))


def test_the_endpoint_serves_runtime_and_product_metrics() -> None:
    endpoint = MetricsEndpoint("127.0.0.1", 0)
    provider = MeterProvider(metric_readers=[endpoint.reader], views=histogram_views())
    try:
        provider.get_meter("test").create_counter(
            catalogue.ORDERS_PLACED.name, unit=catalogue.ORDERS_PLACED.unit
        ).add(2, {"type": "new"})
        with urllib.request.urlopen(endpoint.url, timeout=10) as reply:
            text = reply.read().decode()
        assert 'idc_orders_placed_total{otel_scope_name="test"' in text
        assert "process_resident_memory_bytes" in text
    finally:
        provider.shutdown()
        endpoint.close()


@pytest.mark.parametrize("raw", ["9100", "localhost:", ":9100", "host:99999", "host:x"])
def test_a_bad_metrics_address_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="IDC_METRICS_LISTEN"):
        metrics_listen({"IDC_METRICS_LISTEN": raw})


def test_no_address_means_no_endpoint() -> None:
    assert metrics_listen({}) is None
    assert metrics_listen({"IDC_METRICS_LISTEN": "0.0.0.0:9464"}) == ("0.0.0.0", 9464)


def test_readme_lists_every_metric() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [spec.prometheus_name for spec in CATALOGUE
               if f"| `{spec.prometheus_name}` |" not in readme]
    assert missing == []
