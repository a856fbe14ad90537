"""Every process of the running stack serves its metrics over HTTP, and they move with the
work done: an order placed and provisioned, a poisoned record dead-lettered."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from devstack.run import RunningStack
from services.common.events.topics import USAGE_SAMPLES
from services.common.metric_catalogue import prometheus_names
from tests.integration.cli.conftest import Idcctl

pytestmark = pytest.mark.integration

SPEC = ["--a-end", "sg-edge-1:xe-0/0/3", "--z-end", "cq-edge-1:XGE0/0/3", "--bandwidth", "50"]
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: RunningStack, service: str) -> Series:
    with urllib.request.urlopen(stack.services[service].metrics_url, timeout=10) as reply:
        assert reply.headers.get_content_type() == "text/plain"
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and wanted <= ls)


def names(series: Series) -> set[str]:
    return {name for name, _ in series}


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.5)


def _json(outcome: Any) -> Any:
    assert outcome.code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def test_every_process_serves_its_metrics_and_only_catalogued_ones(
    stack: RunningStack,
) -> None:
    catalogued = prometheus_names()
    # Every service process reads the token revocations (services/common/revocations.py).
    revocations = "idc_token_revocations_lag_seconds"
    expected = {
        "order": {revocations, "idc_orders", "idc_channel_headroom_Mbit_per_second",
                  "idc_port_headroom_Mbit_per_second", "idc_orders_oldest_age_seconds",
                  "idc_outbox_backlog", "idc_consumer_partitions_assigned"},
        "provisioning": {revocations, "idc_provisioning_pending_commits",
                         "idc_provisioning_circuits_out_of_sync",
                         "idc_provisioning_pending_commit_age_seconds", "idc_consumer_lag"},
        "billing": {revocations, "idc_outbox_oldest_unsent_age_seconds", "idc_consumer_lag"},
        # It polls only routers with circuits: its poll counter shows in the next test.
        "billing.meter": {"idc_outbox_backlog", "idc_consumer_partitions_assigned"},
        "console": {"process_resident_memory_bytes"},
    }
    for service, families in expected.items():
        series = wait_for(
            f"{service}'s metrics", lambda s=service, f=families: (
                found if f <= names(found := scrape(stack, s)) else None
            ),
        )
        assert "process_cpu_seconds_total" in names(series)
        ours = {n for n in names(series) if n.startswith(("idc_", "rpc_", "messaging_"))}
        assert ours <= catalogued, f"{service} exports uncatalogued {ours - catalogued}"


def test_an_order_placed_and_provisioned_moves_the_counters(
    stack: RunningStack, idcctl: Idcctl
) -> None:
    order_before, prov_before = scrape(stack, "order"), scrape(stack, "provisioning")
    order = _json(idcctl("customer", "order", *SPEC, "-o", "json"))["order"]
    created = "idc.order.v1.OrderService/CreateOrder"
    after = wait_for("the order counters", lambda: (
        s if value(s := scrape(stack, "order"), "idc_orders_placed_total", type="NEW")
        > value(order_before, "idc_orders_placed_total", type="NEW") else None
    ))
    assert value(after, "rpc_server_call_duration_seconds_count", rpc_method=created,
                 rpc_response_status_code="OK") \
        > value(order_before, "rpc_server_call_duration_seconds_count", rpc_method=created)
    assert value(after, "idc_orders", state="PENDING_APPROVAL") >= 1
    for ops in ("ops-sg", "ops-cq"):
        item = wait_for(f"the order in {ops}'s queue", lambda ops=ops: next(
            (p for p in _json(idcctl("ops", "pending", "-o", "json", token=ops))
             .get("pendingApprovals", [])
             if p["order"]["id"] == order["id"] and p.get("payload", {}).get("sha256")),
            None,
        ))
        approved = idcctl("ops", "approve", order["id"], "--sha256", item["payload"]["sha256"],
                          token=ops)
        assert approved.code == 0, approved.stderr
    watched = idcctl("customer", "watch", order["id"])
    assert watched.code == 0, watched.stdout + watched.stderr

    prov = wait_for("the saga counters", lambda: (
        s if value(s := scrape(stack, "provisioning"), "idc_provisioning_sagas_total",
                   outcome="done")
        > value(prov_before, "idc_provisioning_sagas_total", outcome="done") else None
    ))
    assert value(prov, "idc_provisioning_approve_to_active_duration_seconds_count") \
        > value(prov_before, "idc_provisioning_approve_to_active_duration_seconds_count")
    assert value(prov, "idc_provisioning_saga_step_duration_seconds_count", step="preparing") \
        > value(prov_before, "idc_provisioning_saga_step_duration_seconds_count",
                step="preparing")
    assert value(prov, "idc_provisioning_router_reachable", router="sg-edge-1") == 1
    assert value(prov, "idc_provisioning_router_reachable", router="cq-edge-1") == 1
    assert value(prov, "idc_provisioning_pending_commits", router="sg-edge-1") == 0
    done = wait_for("the order's time in IN_PROGRESS", lambda: (
        s if value(s := scrape(stack, "order"), "idc_orders_state_duration_seconds_count",
                   state="IN_PROGRESS")
        > value(order_before, "idc_orders_state_duration_seconds_count", state="IN_PROGRESS")
        else None
    ))
    assert value(done, "idc_channel_headroom_Mbit_per_second") \
        <= value(order_before, "idc_channel_headroom_Mbit_per_second") - 50
    wait_for("the meter reading the new circuit's router", lambda: value(
        scrape(stack, "billing.meter"), "idc_meter_polls_total", router="sg-edge-1",
        result="read") > 0)


def test_a_dead_lettered_record_moves_the_dlq_counter(stack: RunningStack) -> None:
    before = scrape(stack, "billing")
    producer = KafkaProducer(bootstrap_servers=stack.devstack.broker.bootstrap)
    try:
        producer.send(USAGE_SAMPLES, b"not a usage sample").get(timeout=30)
    finally:
        producer.close(timeout=5)
    after = wait_for("billing's dead-letter counter", lambda: (
        s if value(s := scrape(stack, "billing"), "idc_consumer_dead_lettered_total",
                   messaging_destination_name=USAGE_SAMPLES)
        > value(before, "idc_consumer_dead_lettered_total",
                messaging_destination_name=USAGE_SAMPLES) else None
    ))
    assert value(after, "messaging_client_consumed_messages_total") \
        > value(before, "messaging_client_consumed_messages_total")
    # The record is handled (dead-lettered) and committed: the group catches up.
    wait_for("billing's usage consumer lag back to 0", lambda: (
        (s := scrape(stack, "billing")) and value(
            s, "idc_consumer_lag", messaging_destination_name=USAGE_SAMPLES) == 0
        and any(n == "idc_consumer_lag" for n, _ in s)
    ))
