"""TLS in the manifests: every gRPC server mounts a cert-manager certificate and serves
TLS, probes use the plaintext health-only port, every Kafka client has the cluster CA and
its KafkaUser certificate, and the Strimzi listener is TLS with client authentication."""

from __future__ import annotations

import pytest

from tests.unit.test_k8s import (
    OVERLAYS,
    Manifest,
    containers,
    name_of,
    of_kind,
    render,
    services_of,
)

TLS_DIR = "/etc/idc/tls"
HEALTH_PORT = 8086


def config(manifests: list[Manifest]) -> dict[str, str]:
    [idc_config] = [c for c in of_kind(manifests, "ConfigMap")
                    if c["metadata"]["name"] == "idc-config"]
    data: dict[str, str] = idc_config["data"]
    return data


def mounts(deployment: Manifest) -> dict[str, str]:
    """Secret name -> where the (first) container mounts it."""
    pod = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    return {secrets[m["name"]]: m["mountPath"]
            for m in containers(deployment)[0].get("volumeMounts", []) if m["name"] in secrets}


def grpc_servers(manifests: list[Manifest]) -> list[Manifest]:
    return [d for d in services_of(manifests) if d["metadata"]["name"] != "console"]


def tls_problems(manifests: list[Manifest]) -> list[str]:
    found = []
    settings = config(manifests)
    expected = {
        "IDC_TLS": "on", "IDC_TLS_CERT_FILE": f"{TLS_DIR}/tls.crt",
        "IDC_TLS_KEY_FILE": f"{TLS_DIR}/tls.key", "IDC_TLS_CA_FILE": f"{TLS_DIR}/ca.crt",
        "IDC_TLS_HEALTH_LISTEN": f"0.0.0.0:{HEALTH_PORT}",
    }
    for key, value in expected.items():
        if settings.get(key) != value:
            found.append(f"idc-config: {key} is {settings.get(key)!r}, not {value!r}")
    certificates = {c["spec"]["secretName"] for c in of_kind(manifests, "Certificate")}
    for deployment in services_of(manifests):
        name = deployment["metadata"]["name"]
        secret = f"{name}-grpc-tls"
        if mounts(deployment).get(secret) != TLS_DIR:
            found.append(f"{name_of(deployment)}: does not mount {secret} at {TLS_DIR}")
        if secret not in certificates:
            found.append(f"{name_of(deployment)}: no Certificate issues {secret}")
    for deployment in grpc_servers(manifests):
        container = containers(deployment)[0]
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        if ports.get("health") != HEALTH_PORT:
            found.append(f"{name_of(deployment)}: no container port health {HEALTH_PORT}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if container[probe]["grpc"]["port"] != HEALTH_PORT:
                found.append(f"{name_of(deployment)}: {probe} is not on the health port")
    return found


def kafka_problems(manifests: list[Manifest]) -> list[str]:
    found = []
    settings = config(manifests)
    if settings.get("IDC_KAFKA_SECURITY_PROTOCOL") != "SSL":
        found.append("idc-config: IDC_KAFKA_SECURITY_PROTOCOL is not SSL")
    users = {u["metadata"]["name"] for u in of_kind(manifests, "KafkaUser")}
    for deployment in grpc_servers(manifests):
        name = deployment["metadata"]["name"]
        mounted = mounts(deployment)
        if mounted.get("idc-kafka-cluster-ca-cert") != "/etc/idc/kafka-ca":
            found.append(f"{name_of(deployment)}: does not mount the Kafka cluster CA")
        if mounted.get(f"idc-kafka-{name}") != "/etc/idc/kafka-user":
            found.append(f"{name_of(deployment)}: does not mount its KafkaUser's certificate")
        if of_kind(manifests, "Kafka") and f"idc-kafka-{name}" not in users:
            found.append(f"{name_of(deployment)}: no KafkaUser idc-kafka-{name}")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_grpc_server_serves_tls_from_a_cert_manager_certificate(overlay: str) -> None:
    assert tls_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kafka_client_uses_tls_with_its_own_certificate(overlay: str) -> None:
    assert kafka_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", ["dev", "sg"])
def test_the_kafka_listener_is_tls_and_every_user_has_acls(overlay: str) -> None:
    manifests = render(overlay)
    [kafka] = of_kind(manifests, "Kafka")
    [listener] = kafka["spec"]["kafka"]["listeners"]
    assert (listener["port"], listener["tls"], listener["authentication"]["type"]) == (
        9092, True, "tls"
    )
    for user in of_kind(manifests, "KafkaUser"):
        writes = {acl["resource"].get("name") for acl in user["spec"]["authorization"]["acls"]
                  if "Write" in acl["operations"]}
        assert writes, f"{name_of(user)} may write nothing"
        assert "idc." not in writes, f"{name_of(user)} may write every topic"


def test_a_deployment_without_its_certificate_or_kafka_user_is_caught() -> None:
    manifests = render("dev")
    [order] = [d for d in of_kind(manifests, "Deployment") if d["metadata"]["name"] == "order"]
    order["spec"]["template"]["spec"]["volumes"] = [
        v for v in order["spec"]["template"]["spec"]["volumes"] if "secret" not in v
    ]
    order["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = 50051
    assert tls_problems(manifests) == [
        "Deployment/order: does not mount order-grpc-tls at /etc/idc/tls",
        "Deployment/order: readinessProbe is not on the health port",
    ]
    assert kafka_problems(manifests) == [
        "Deployment/order: does not mount the Kafka cluster CA",
        "Deployment/order: does not mount its KafkaUser's certificate",
    ]
    config(manifests)["IDC_TLS"] = "off"
    assert "idc-config: IDC_TLS is 'off', not 'on'" in tls_problems(manifests)
