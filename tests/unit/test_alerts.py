"""The NOC's alerts and dashboards (k8s/components/observability): every PromQL expression
names only metrics the services export (services/common/metric_catalogue.py), thresholds
follow the services' settings, each alert carries what an operator needs, and the
Prometheus Operator resources have the shape the operator reads (no schema offline)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.billing.meter.config import DEFAULT_INTERVAL_S
from services.common.metric_catalogue import CATALOGUE, prometheus_names
from services.common.tokens import TokenSettings
from services.order.settings import OrderSettings
from services.provisioning.agent.prepare import DEFAULT_CONFIRM_TIMEOUT_S
from tests.unit.test_k8s import (
    K8S,
    METRICS_PORT,
    OVERLAYS,
    Manifest,
    of_kind,
    render,
    services_of,
)

OBSERVABILITY = K8S / "components" / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
SEVERITIES = {"critical", "warning"}
# Scraped by Prometheus itself for every target.
PROMETHEUS_SERIES = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers left once strings, label matchers,
    ranges and grouping lists are removed, that are not function calls or keywords."""
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    # Numbers (0.95, 1e3) and Grafana variables ($__rate_interval) are not names.
    text = re.sub(r"\$\w+|\b\d[\w.]*", " ", text)
    return {name for name in IDENTIFIER.findall(text) if name not in KEYWORDS}


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - prometheus_names() - PROMETHEUS_SERIES


def _rule_file() -> Manifest:
    (rule,) = of_kind(render("sg"), "PrometheusRule")
    return rule


def alerts(rule: Manifest | None = None) -> list[Manifest]:
    rule = rule or _rule_file()
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _alert(name: str) -> Manifest:
    return next(a for a in alerts() if a["alert"] == name)


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def rule_problems(rule: Manifest) -> list[str]:
    """What the Prometheus Operator or a NOC would miss in a PrometheusRule."""
    found = []
    if rule.get("apiVersion") != "monitoring.coreos.com/v1":
        found.append(f"apiVersion {rule.get('apiVersion')}")
    for alert in alerts(rule):
        name = alert.get("alert", "?")
        if not re.fullmatch(r"[A-Z][A-Za-z]+", name):
            found.append(f"{name}: not a CamelCase alert name")
        if unknown := unknown_metrics(alert.get("expr", "")):
            found.append(f"{name}: unknown metrics {sorted(unknown)}")
        if alert.get("expr", "").count("(") != alert.get("expr", "").count(")"):
            found.append(f"{name}: unbalanced parentheses")
        if "for" in alert and not DURATION.match(alert["for"]):
            found.append(f"{name}: for {alert['for']!r} is not a duration")
        if alert.get("labels", {}).get("severity") not in SEVERITIES:
            found.append(f"{name}: severity not one of {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook"):
            if len(alert.get("annotations", {}).get(key, "")) < 20:
                found.append(f"{name}: no {key}")
    return found


# --- the tokenizer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        (
            'max by (state) (idc_orders_oldest_age_seconds{state=~"A|B"}) > 900',
            {"idc_orders_oldest_age_seconds"},
        ),
        (
            "histogram_quantile(0.95, sum by (job, le) (rate(x_bucket{a='b'}[$__rate_interval])))",
            {"x_bucket"},
        ),
        ("a / on (job) group_left (pod) b offset 5m and bool c", {"a", "b", "c"}),
        ("deriv(lag[15m:1m]) > 1e3 unless topk(10, d)", {"lag", "d"}),
        ('sum(rate(e{namespace=~"$namespace"}[5m]))', {"e"}),
    ],
)
def test_the_tokenizer_finds_the_series_an_expression_reads(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_an_unknown_metric_in_a_rule_is_caught() -> None:
    rule = _rule_file()
    assert rule_problems(rule) == []
    alerts(rule)[0]["expr"] = "sum(rate(idc_orders_stuck_total[5m])) > 0"
    assert rule_problems(rule) == [
        "IdcOrderProvisioningOverdue: unknown metrics ['idc_orders_stuck_total']"
    ]


def test_an_unknown_metric_in_a_panel_is_caught() -> None:
    assert unknown_metrics("max by (router) (idc_provisioning_routers_up)") == {
        "idc_provisioning_routers_up"
    }


# --- alerts -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_ships_the_alerts_the_pod_monitor_and_the_dashboards(overlay: str) -> None:
    manifests = render(overlay)
    assert len(of_kind(manifests, "PrometheusRule")) == 1
    assert len(of_kind(manifests, "PodMonitor")) == 1
    dashboards = [
        c
        for c in of_kind(manifests, "ConfigMap")
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert sorted(k for c in dashboards for k in c["data"]) == [p.name for p in DASHBOARDS]


def test_every_alert_names_known_metrics_and_tells_the_noc_what_to_do() -> None:
    assert rule_problems(_rule_file()) == []


@pytest.mark.parametrize("field", ["severity", "summary", "description", "runbook"])
def test_an_alert_without_what_the_noc_needs_is_caught(field: str) -> None:
    rule = _rule_file()
    first = alerts(rule)[0]
    (first["labels"] if field == "severity" else first["annotations"]).pop(field)
    assert rule_problems(rule)


def test_the_alerts_cover_every_failure_the_noc_watches() -> None:
    metrics = {n for a in alerts() for n in metric_names(a["expr"])}
    assert metrics >= {
        "idc_orders_oldest_age_seconds",
        "idc_provisioning_pending_commit_age_seconds",
        "idc_provisioning_circuits_out_of_sync",
        "idc_provisioning_router_reachable",
        "idc_consumer_lag",
        "idc_consumer_partitions_assigned",
        "idc_consumer_dead_lettered_total",
        "idc_outbox_oldest_unsent_age_seconds",
        "idc_billing_ingest_lag_seconds",
        "rpc_server_call_duration_seconds_count",
        "idc_tls_certificate_not_after_seconds",
        "idc_token_revocations_lag_seconds",
        "up",
    }


def test_thresholds_are_the_services_own_bounds() -> None:
    order = OrderSettings()
    config = next(
        c for c in of_kind(render("sg"), "ConfigMap") if c["metadata"]["name"] == "idc-config"
    )["data"]
    # The deployed settings keep the defaults the thresholds are written for.
    assert not {
        "IDC_ORDER_PROVISIONING_ALARM_S",
        "IDC_ORDER_APPROVAL_WINDOW_S",
        "IDC_PROVISIONING_CONFIRM_TIMEOUT_S",
        "IDC_METER_INTERVAL_S",
        "IDC_TOKEN_REVOCATION_STALE_S",
    } & set(config)
    bounds = {
        "IdcOrderProvisioningOverdue": order.provisioning_alarm_s,
        "IdcOrderApprovalOverdue": order.approval_window_s,
        "IdcPendingCommitPastTimeout": DEFAULT_CONFIRM_TIMEOUT_S,
        "IdcBillingIngestLag": 3 * DEFAULT_INTERVAL_S,
        "IdcOutboxBacklogOld": 60,
        "IdcTokenRevocationsStale": TokenSettings.revocation_stale_s,
    }
    for name, bound in bounds.items():
        assert _alert(name)["expr"].endswith(f"> {bound}"), name
    assert '"APPROVED|IN_PROGRESS|SCHEDULED"' in _alert("IdcOrderProvisioningOverdue")["expr"]


def test_process_down_watches_every_deployment() -> None:
    expr = _alert("IdcProcessDown")["expr"]
    jobs = set(re.search(r'job=~"([^"]+)"', expr).group(1).split("|"))  # type: ignore[union-attr]
    # The sandbox routers export no metrics: their probes restart them (k8s/README.md).
    assert jobs == {d["metadata"]["name"] for d in services_of(render("dev"))}


def test_the_readme_lists_every_alert() -> None:
    readme = (K8S / "README.md").read_text()
    assert [a["alert"] for a in alerts() if f"| `{a['alert']}` |" not in readme] == []


# --- dashboards and the pod monitor -------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_dashboard_panel_names_known_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem and dashboard["panels"]
    exprs = list(panel_exprs(dashboard))
    assert exprs
    assert [(title, sorted(unknown_metrics(e))) for title, e in exprs if unknown_metrics(e)] == []
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_dashboards_cover_the_four_areas() -> None:
    assert [p.stem for p in DASHBOARDS] == [
        "idc-billing",
        "idc-orders",
        "idc-provisioning",
        "idc-rpc-events",
    ]
    used = {
        n
        for p in DASHBOARDS
        for _, e in panel_exprs(json.loads(p.read_text()))
        for n in metric_names(e)
    }
    # Every metric of the catalogue is on some dashboard (a histogram through any part).
    assert [
        s.name for s in CATALOGUE if not any(n.startswith(s.prometheus_name) for n in used)
    ] == []


def test_the_pod_monitor_scrapes_the_metrics_port_of_every_deployment() -> None:
    manifests = render("sg")
    (monitor,) = of_kind(manifests, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    selector = monitor["spec"]["selector"]["matchLabels"]
    for deployment in services_of(manifests):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]
        ports = {
            p.get("name"): p["containerPort"]
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert ports.get("metrics") == METRICS_PORT, deployment["metadata"]["name"]


def _hours(duration: str) -> int:
    assert duration.endswith("h"), duration
    return int(duration[:-1])


def test_the_certificate_alert_fires_only_once_a_renewal_is_overdue() -> None:
    # Warning between 3 and 14 days, critical under 3 days (negative: expired).
    warning, critical = (a for a in alerts() if a["alert"] == "IdcCertificateExpiringSoon")
    assert (warning["labels"]["severity"], critical["labels"]["severity"]) == (
        "warning", "critical"
    )
    assert warning["expr"].endswith(f"< {14 * 86400} >= {3 * 86400}")
    assert critical["expr"].endswith(f"< {3 * 86400}")
    # cert-manager renews every certificate earlier than the warning (renewBefore), so an
    # ordinary renewal never raises it.
    renew_before = [
        _hours(c["spec"]["renewBefore"]) * 3600
        for overlay in OVERLAYS
        for c in of_kind(render(overlay), "Certificate")
        if "renewBefore" in c["spec"]
    ]
    assert renew_before and min(renew_before) > 14 * 86400
