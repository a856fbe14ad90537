"""The manifests that keep production going on a bad day: database backups and the restore
procedure, the ops console, the single meter, the business data mounted over the built-in
defaults, and memory sized from measured figures. Each rule is shown to catch a breakage."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest

from services.billing.domain.entities import parse_directory
from services.order.domain.catalogue import DEFAULT_CATALOGUE, parse_catalogue
from services.order.domain.pricing import DEFAULT_PRICE_BOOK, parse_price_book
from tests.unit.test_k8s import (
    K8S,
    REPO,
    Manifest,
    containers,
    name_of,
    of_kind,
    render,
)
from tests.unit.test_k8s_network import ingress_ports_from_namespace

README = (K8S / "README.md").read_text()
SIX_FIELD_CRON = re.compile(r"^(\S+ ){5}\S+$")


def _named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    return next(m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name)


def _env(deployment: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for c in containers(deployment) for e in c["env"]}


# --- backups ------------------------------------------------------------------------------


def backup_problems(manifests: list[Manifest]) -> list[str]:
    found = []
    clusters = {c["metadata"]["name"]: c for c in of_kind(manifests, "Cluster")}
    for name, cluster in clusters.items():
        backup = cluster["spec"].get("backup", {})
        store = backup.get("barmanObjectStore", {})
        if not str(store.get("destinationPath", "")).startswith("s3://"):
            found.append(f"{name}: no object store to back up to")
        if not re.fullmatch(r"\d+[dwm]", backup.get("retentionPolicy", "")):
            found.append(f"{name}: no retention policy")
        secrets = {ref["name"] for ref in store.get("s3Credentials", {}).values()}
        if not secrets or any(f"`{s}`" not in README for s in secrets):
            found.append(f"{name}: object store credentials not from a documented Secret")
        if "wal" not in store:
            found.append(f"{name}: WALs are not archived (no point-in-time recovery)")
    scheduled = {}
    for backup in of_kind(manifests, "ScheduledBackup"):
        scheduled[backup["spec"]["cluster"]["name"]] = backup
        if not SIX_FIELD_CRON.match(backup["spec"].get("schedule", "")):
            found.append(f"{name_of(backup)}: schedule is not a six-field cron")
    found += [f"{name}: no ScheduledBackup" for name in sorted(set(clusters) - set(scheduled))]
    found += [f"ScheduledBackup of unknown cluster {n}" for n in set(scheduled) - set(clusters)]
    return found


def test_every_production_database_is_backed_up_on_a_schedule() -> None:
    manifests = render("sg")
    assert len(of_kind(manifests, "Cluster")) == 4
    assert backup_problems(manifests) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda m: of_kind(m, "Cluster")[0]["spec"].pop("backup"),
        lambda m: of_kind(m, "Cluster")[0]["spec"]["backup"].pop("retentionPolicy"),
        lambda m: m.remove(of_kind(m, "ScheduledBackup")[0]),
        lambda m: of_kind(m, "ScheduledBackup")[0]["spec"].update(schedule="0 2 * * *"),
    ],
)
def test_a_database_without_backups_is_caught(breakage: object) -> None:
    manifests = render("sg")
    breakage(manifests)  # type: ignore[operator]
    assert backup_problems(manifests)


def test_the_readme_says_how_to_restore_from_the_object_store() -> None:
    restore = README[README.index("### Restoring a database") :]
    for step in (
        "bootstrap:",
        "recovery:",
        "externalClusters:",
        "barmanObjectStore:",
        "serverName:",
        "recoveryTarget",
        "scale deployment/order --replicas=0",
    ):
        assert step in restore, step


# --- the console --------------------------------------------------------------------------


def test_the_console_reaches_the_two_apis_and_is_reached_from_the_ingress_only() -> None:
    manifests = render("sg")
    console = _named(manifests, "Deployment", "console")
    env = _env(console)
    services = {s["metadata"]["name"]: s for s in of_kind(manifests, "Service")}
    for variable in ("IDC_ORDER_ADDRESS", "IDC_PROVISIONING_ADDRESS"):
        host, port = env[variable].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, variable
    assert env["IDC_CONSOLE_LISTEN"] == "0.0.0.0:8080"
    assert services["console"]["spec"]["ports"][0]["targetPort"] == "http"
    labels = console["spec"]["template"]["metadata"]["labels"]
    policies = of_kind(manifests, "NetworkPolicy")
    assert ingress_ports_from_namespace(policies, labels, "ingress-nginx") == {8080}
    coordinator = _named(manifests, "Deployment", "provisioning-coordinator")
    assert any(
        rule["from"][0].get("podSelector", {}).get("matchLabels")
        == {"app.kubernetes.io/name": "console"}
        for p in policies
        if p["spec"]["podSelector"].get("matchLabels", {}).items()
        <= coordinator["spec"]["template"]["metadata"]["labels"].items()
        for rule in p["spec"].get("ingress", [])
    )


# --- the order API's two protocols --------------------------------------------------------


def _ingress_from_anywhere(policies: list[Manifest], labels: dict[str, str]) -> set[int]:
    """The TCP ports of a pod with ``labels`` that any client may connect to."""
    return {p["port"] for policy in policies
            if policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
            for rule in policy["spec"].get("ingress", []) if not rule.get("from")
            for p in rule.get("ports", []) if p.get("protocol") == "TCP"}


def rest_problems(manifests: list[Manifest]) -> list[str]:
    order = _named(manifests, "Deployment", "order")
    (container,) = containers(order)
    address = _env(order).get("IDC_ORDER_REST_ADDRESS", "")
    if not address:
        return ["order: IDC_ORDER_REST_ADDRESS is not set (no partner REST facade)"]
    port = int(address.rsplit(":", 1)[1])
    found = []
    if {"name": "rest", "containerPort": port} not in container["ports"]:
        found.append(f"order: no container port `rest` {port}")
    service = _named(manifests, "Service", "order")
    if not any(p["targetPort"] == "rest" for p in service["spec"]["ports"]):
        found.append("order: the Service does not expose `rest`")
    labels = order["spec"]["template"]["metadata"]["labels"]
    if port not in _ingress_from_anywhere(of_kind(manifests, "NetworkPolicy"), labels):
        found.append(f"order: no NetworkPolicy lets partners reach {port}")
    # The REST facade is a worker of the process the gRPC health probes follow.
    probes = [container[probe]["grpc"]["port"] for probe in
              ("startupProbe", "readinessProbe", "livenessProbe") if "grpc" in container[probe]]
    if len(probes) != 3:
        found.append("order: the probes are not the gRPC health ones")
    return found


def test_the_order_api_serves_the_partner_rest_facade_beside_grpc() -> None:
    assert rest_problems(render("sg")) == []


@pytest.mark.parametrize("breakage", ["no address", "no port", "no policy"])
def test_an_unreachable_rest_facade_is_caught(breakage: str) -> None:
    manifests = copy.deepcopy(list(render("sg")))
    order = _named(manifests, "Deployment", "order")
    (container,) = containers(order)
    if breakage == "no address":
        container["env"] = [e for e in container["env"] if e["name"] != "IDC_ORDER_REST_ADDRESS"]
    elif breakage == "no port":
        container["ports"] = [p for p in container["ports"] if p["name"] != "rest"]
    else:
        manifests = [m for m in manifests if m["metadata"]["name"] != "order-api-clients"]
    assert rest_problems(manifests)


# --- replicas and disruption budgets ------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "sg"])
def test_the_meter_runs_alone_and_is_replaced_not_rolled(overlay: str) -> None:
    manifests = render(overlay)
    meter = _named(manifests, "Deployment", "meter")
    assert meter["spec"]["replicas"] == 1
    assert meter["spec"]["strategy"] == {"type": "Recreate"}
    budget = _named(manifests, "PodDisruptionBudget", "meter")
    # One replica: minAvailable 1 would block every node drain.
    assert budget["spec"] == {**budget["spec"], "maxUnavailable": 1}
    assert "One replica by design" in budget["metadata"]["annotations"]["kubernetes.io/description"]


def test_the_apis_run_two_replicas_and_lose_at_most_one_to_a_disruption() -> None:
    manifests = render("sg")
    for name in ("order", "billing", "provisioning-coordinator", "provisioning-agent-sg"):
        assert _named(manifests, "Deployment", name)["spec"]["replicas"] == 2, name
        assert _named(manifests, "PodDisruptionBudget", name)["spec"]["maxUnavailable"] == 1


# --- business data over the built-in defaults ---------------------------------------------


def _workdir() -> str:
    dockerfile = (REPO / "Dockerfile").read_text()
    # The last stage's working directory: where the code (and services/order/data) lives.
    workdirs: list[str] = re.findall(r"^WORKDIR (\S+)", dockerfile, re.M)
    return workdirs[-1]


def _mounted_config_map(manifests: list[Manifest], deployment: Manifest, path: Path) -> Manifest:
    """The ConfigMap mounted at ``path`` in the Deployment's container, and that mount."""
    (mount,) = [m for m in containers(deployment)[0]["volumeMounts"] if m["mountPath"] == str(path)]
    assert mount["readOnly"] is True
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    return _named(manifests, "ConfigMap", volume["configMap"]["name"])


def test_the_catalogue_and_price_book_replace_the_package_directory() -> None:
    # They have no setting of their own: the service reads its package's data directory.
    manifests = render("sg")
    package_dir = DEFAULT_CATALOGUE.parent
    assert DEFAULT_PRICE_BOOK.parent == package_dir
    mount_path = Path(_workdir()) / package_dir.relative_to(REPO)
    data = _mounted_config_map(manifests, _named(manifests, "Deployment", "order"), mount_path)
    # The mount replaces the whole directory: it must hold nothing but these two files.
    assert sorted(data["data"]) == sorted(p.name for p in package_dir.iterdir())
    parse_catalogue(tomllib.loads(data["data"]["catalogue.toml"]))
    parse_price_book(tomllib.loads(data["data"]["price_book.toml"]))
    for name, text in data["data"].items():
        assert text == (package_dir / name).read_text(), f"the ConfigMap's {name} is stale"


# The copies under k8s/ of the files the image ships, and those files.
DATA_COPIES = {
    K8S / "base/central/data/catalogue.toml": DEFAULT_CATALOGUE,
    K8S / "base/central/data/price_book.toml": DEFAULT_PRICE_BOOK,
    K8S / "base/central/data/billing_entities.toml":
        REPO / "services/billing/data/billing_entities.toml",
}


def copy_problems(copies: dict[Path, Path]) -> list[str]:
    return [f"{copy} differs from {source}: copy it over"
            for copy, source in copies.items() if copy.read_bytes() != source.read_bytes()]


def test_the_business_data_under_k8s_is_the_data_the_services_ship() -> None:
    # No kustomize needed: the copies themselves, byte for byte.
    assert copy_problems(DATA_COPIES) == []


def test_a_stale_copy_is_caught(tmp_path: Path) -> None:
    stale = tmp_path / "catalogue.toml"
    stale.write_text(DEFAULT_CATALOGUE.read_text().replace("sg-sin2", "sg-sin9"))
    problems = copy_problems({stale: DEFAULT_CATALOGUE} | {
        k: v for k, v in DATA_COPIES.items() if v != DEFAULT_CATALOGUE})
    assert len(problems) == 1 and "catalogue.toml" in problems[0]


def test_the_billing_entities_are_read_from_their_config_map() -> None:
    manifests = render("sg")
    billing = _named(manifests, "Deployment", "billing")
    path = Path(_env(billing)["IDC_BILLING_ENTITIES_FILE"])
    entities = _mounted_config_map(manifests, billing, path.parent)
    parse_directory(entities["data"][path.name], path.name)


# --- resources from measured figures ------------------------------------------------------

MEBI = {"Mi": 1, "Gi": 1024}


def _mebibytes(quantity: str) -> int:
    return int(quantity[:-2]) * MEBI[quantity[-2:]]


def measured_rss() -> dict[str, float]:
    """The README's "Resources" table: process, measured RSS in MiB."""
    section = README[README.index("## Resources") :]
    rows = re.findall(r"^\| `([\w-]+)` \| ([\d.]+) MiB \|", section, re.M)
    return {name: float(rss) for name, rss in rows}


def test_memory_requests_cover_the_measured_resident_set_and_limits_are_twice_that() -> None:
    measured = measured_rss()
    deployments = of_kind(render("dev"), "Deployment")
    assert {d["metadata"]["name"] for d in deployments} <= set(measured)
    for deployment in deployments:
        resources = containers(deployment)[0]["resources"]
        request = _mebibytes(resources["requests"]["memory"])
        limit = _mebibytes(resources["limits"]["memory"])
        rss = measured[deployment["metadata"]["name"]]
        assert rss * 1.15 <= request <= rss * 2, deployment["metadata"]["name"]
        assert limit == 2 * request, deployment["metadata"]["name"]
