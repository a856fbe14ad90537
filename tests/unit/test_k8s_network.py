"""The NetworkPolicies of every overlay: everything denied by default, then each flow the
design needs (DNS, the broker, each service's own database, the routers for the agents and
the meter only, the console to the two APIs only, Prometheus to every metrics port). Each
rule is also shown to catch a policy set that breaks it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.test_k8s import (
    METRICS_PORT,
    OVERLAYS,
    Manifest,
    containers,
    is_sandbox_router,
    name_of,
    of_kind,
    render,
)


def _is_default_deny(policy: Manifest) -> bool:
    spec = policy["spec"]
    return (
        spec.get("podSelector") == {}
        and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def _matches(rule: Manifest, labels: dict[str, str]) -> bool:
    value = labels.get(rule["key"])
    return {
        "In": value in rule.get("values", []),
        "NotIn": value not in rule.get("values", []),
        "Exists": value is not None,
        "DoesNotExist": value is None,
    }[rule["operator"]]


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    return all(_matches(rule, labels) for rule in selector.get("matchExpressions", []))


def egress_ports(policies: list[Manifest], labels: dict[str, str]) -> set[int]:
    """The TCP ports a pod with ``labels`` may connect to (any destination)."""
    ports: set[int] = set()
    for policy in policies:
        if _selects(policy["spec"]["podSelector"], labels):
            for rule in policy["spec"].get("egress", []):
                ports |= {p["port"] for p in rule.get("ports", []) if p.get("protocol") == "TCP"}
    return ports


def ingress_ports_from_namespace(
    policies: list[Manifest], labels: dict[str, str], namespace: str
) -> set[int]:
    """The TCP ports of a pod with ``labels`` that pods of ``namespace`` may connect to."""
    ports: set[int] = set()
    for policy in policies:
        if not _selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            sources = [peer.get("namespaceSelector", {}) for peer in rule.get("from", [])]
            names = [s.get("matchLabels", {}).get("kubernetes.io/metadata.name") for s in sources]
            if namespace in names:
                ports |= {p["port"] for p in rule.get("ports", []) if p.get("protocol") == "TCP"}
    return ports


def has_database(deployment: Manifest) -> bool:
    return any(
        e["name"].endswith("_DATABASE_URL")
        for c in containers(deployment)
        for e in c.get("env", [])
    )


def ingress_sources(policies: list[Manifest], labels: dict[str, str]) -> dict[int, list[Manifest]]:
    """For each TCP port of a pod with ``labels``: the peers allowed in (``{}``: anyone)."""
    sources: dict[int, list[Manifest]] = {}
    for policy in policies:
        if _selects(policy["spec"]["podSelector"], labels):
            for rule in policy["spec"].get("ingress", []):
                for port in rule.get("ports", [{"protocol": "TCP", "port": 0}]):
                    if port.get("protocol") == "TCP":
                        sources.setdefault(port["port"], []).extend(rule.get("from", [{}]))
    return sources


def sandbox_router_problems(policies: list[Manifest], router: Manifest) -> list[str]:
    """A sandbox router connects nowhere but DNS and admits only its own telco's agent, on
    its NETCONF port (``sandbox-router-sg`` <- ``provisioning-agent-sg``). Rules for ports
    it does not listen on (the shared probe and scrape policies) let nothing in."""
    name, labels = name_of(router), router["spec"]["template"]["metadata"]["labels"]
    side = labels["app.kubernetes.io/name"].rsplit("-", 1)[1]
    agent = {"app.kubernetes.io/name": f"provisioning-agent-{side}"}
    (listening,) = [p for c in containers(router) for p in c["ports"]]
    port = listening["containerPort"]
    found = []
    if egress_ports(policies, labels) - {53}:
        found.append(f"{name}: may connect beyond DNS")
    sources = {
        number: peers
        for number, peers in ingress_sources(policies, labels).items()
        if number in {0, port, listening["name"]}
    }
    for peer in (p for peers in sources.values() for p in peers):
        if set(peer) != {"podSelector"} or peer["podSelector"].get("matchLabels") != agent:
            found.append(f"{name}: admits {peer or 'anyone'}, not only {agent}")
    if set(sources) != {port}:
        found.append(f"{name}: ingress on {sorted(sources)}, not only its NETCONF port {port}")
    if port not in egress_ports(policies, agent):
        found.append(f"{name}: {agent} may not connect to it on {port}")
    return found


def network_problems(manifests: list[Manifest]) -> list[str]:
    policies = of_kind(manifests, "NetworkPolicy")
    found = []
    if not any(_is_default_deny(policy) for policy in policies):
        found.append("no default-deny NetworkPolicy for ingress and egress")
    for deployment in of_kind(manifests, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        allowed = egress_ports(policies, labels)
        if is_sandbox_router(deployment):
            found += sandbox_router_problems(policies, deployment)
            continue
        # The console has no database and no broker: it calls the two APIs only.
        needed = (
            ((9092, "Kafka"), (5432, "PostgreSQL"))
            if has_database(deployment)
            else ((50051, "the order API"), (50052, "the provisioning API"))
        )
        for port, what in ((53, "DNS"), *needed):
            if port not in allowed:
                found.append(f"{name_of(deployment)}: no egress to {what} ({port})")
        if not has_database(deployment) and allowed & {9092, 5432}:
            found.append(f"{name_of(deployment)}: may reach Kafka or PostgreSQL without need")
        if METRICS_PORT not in ingress_ports_from_namespace(policies, labels, "monitoring"):
            found.append(f"{name_of(deployment)}: monitoring cannot scrape {METRICS_PORT}")
        name = deployment["metadata"]["name"]
        if (name.startswith("provisioning-agent") or name == "meter") and 830 not in allowed:
            found.append(f"{name_of(deployment)}: no egress to the routers' NETCONF port")
        if not (name.startswith("provisioning-agent") or name == "meter") and 830 in allowed:
            found.append(f"{name_of(deployment)}: may reach the routers but has no need to")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_is_denied_by_default_and_each_workload_has_its_flows(overlay: str) -> None:
    assert network_problems(render(overlay)) == []


NETWORK_BREAKAGES: dict[str, Callable[[list[Manifest]], list[Manifest]]] = {
    "no default deny": lambda m: [
        x for x in m if not (x["kind"] == "NetworkPolicy" and _is_default_deny(x))
    ],
    "no dns": lambda m: [x for x in m if x["metadata"]["name"] != "allow-dns"],
    "no scrape": lambda m: [x for x in m if x["metadata"]["name"] != "allow-metrics-scrape"],
    "console cut off": lambda m: [x for x in m if x["metadata"]["name"] != "console-to-apis"],
    "console reaches kafka": lambda m: [
        *m,
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "bad"},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "console"}},
                "egress": [{"ports": [{"protocol": "TCP", "port": 9092}]}],
            },
        },
    ],
    "no kafka": lambda m: [x for x in m if x["metadata"]["name"] != "services-to-kafka"],
    "no database": lambda m: [x for x in m if x["metadata"]["name"] != "billing-to-billing-db"],
    "agent cut off": lambda m: [
        x for x in m if x["metadata"]["name"] != "provisioning-agent-sg-to-routers"
    ],
    "sandbox router open to all": lambda m: [
        *m,
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "bad"},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "sandbox-router-cq"}},
                "ingress": [{"ports": [{"protocol": "TCP", "port": 2831}]}],
            },
        },
    ],
    "sandbox router admits the other agent": lambda m: [
        *m,
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "bad"},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "sandbox-router-sg"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchLabels": {
                                        "app.kubernetes.io/name": "provisioning-agent-cq"
                                    }
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": 2830}],
                    }
                ],
            },
        },
    ],
    "agent cut off from its sandbox router": lambda m: [
        x for x in m if x["metadata"]["name"] != "provisioning-agent-sg-to-sandbox-router"
    ],
    "order reaches routers": lambda m: [
        *m,
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "bad"},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "order"}},
                "egress": [{"ports": [{"protocol": "TCP", "port": 830}]}],
            },
        },
    ],
}


@pytest.mark.parametrize("breakage", sorted(NETWORK_BREAKAGES))
def test_a_broken_network_policy_set_is_caught(breakage: str) -> None:
    manifests = render("dev")
    broken = NETWORK_BREAKAGES[breakage](manifests)
    assert broken != manifests, f"the mutation {breakage!r} no longer applies"
    assert network_problems(broken)
