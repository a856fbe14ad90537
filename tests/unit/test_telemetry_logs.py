from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace

from services.common.config import ConfigError
from services.common.logs import JsonFormatter
from services.common.telemetry import configure_telemetry


def test_unknown_exporter_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        configure_telemetry("order", {"OTEL_TRACES_EXPORTER": "zipkin-v0"})


def test_console_exporters_are_configured_when_asked() -> None:
    telemetry = configure_telemetry(
        "order", {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}
    )
    resource = telemetry.tracer_provider.resource
    assert resource.attributes["service.name"] == "idc-order"
    telemetry.shutdown()


def test_json_log_lines_carry_the_trace_id_and_extra_fields() -> None:
    telemetry = configure_telemetry("billing", {})
    formatter = JsonFormatter("billing")
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        record = logging.LogRecord("x", logging.INFO, "f.py", 1, "rated %d", (3,), None)
        record.circuit_id = "c-1"
        line = json.loads(formatter.format(record))
        expected_trace = f"{span.get_span_context().trace_id:032x}"
    assert line["message"] == "rated 3"
    assert line["trace_id"] == expected_trace
    assert line["circuit_id"] == "c-1"
    assert line["service"] == "billing"
    assert not trace.get_current_span().get_span_context().is_valid
    assert "trace_id" not in json.loads(formatter.format(record))
