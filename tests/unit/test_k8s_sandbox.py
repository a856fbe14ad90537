"""The simulated sandbox routers in the shipped deployment (k8s/README.md "Sandbox routers"):
each cluster runs its telco's sandbox router next to its agent, the provisioning inventory
lists both with ``sandbox = true`` at their Services, the catalogue's sandbox sites sit on
them, and the image (sandbox/Dockerfile, checked statically: no engine runs here) has the
layout the manifests and the entry point expect. Each rule is shown to catch a breakage."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.routers import SetupError, load_settings, parse_routers
from services.order.domain.catalogue import DEFAULT_CATALOGUE, parse_catalogue
from services.provisioning.inventory import PLATFORMS, Inventory, load_toml
from tests.unit.test_dockerfile import BUILD_TOOLS, DEVELOPMENT, Stage, parse
from tests.unit.test_k8s import (
    OVERLAYS,
    REPO,
    SANDBOX_ENTRY,
    Manifest,
    containers,
    is_sandbox_router,
    of_kind,
    render,
)

DOCKERFILE = REPO / "sandbox" / "Dockerfile"
# The cluster that runs each telco's agent runs that telco's sandbox router.
SIDES = {"dev": {"sg", "cq"}, "sg": {"sg"}, "cq": {"cq"}}


def _routers(manifests: list[Manifest]) -> list[Manifest]:
    return [d for d in of_kind(manifests, "Deployment") if is_sandbox_router(d)]


def _env(deployment: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for c in containers(deployment) for e in c["env"]}


def _inventory(manifests: list[Manifest], tmp: Path) -> Inventory:
    (config,) = [
        m for m in of_kind(manifests, "ConfigMap") if "inventory.toml" in m.get("data", {})
    ]
    path = tmp / "inventory.toml"
    path.write_text(config["data"]["inventory.toml"])
    return load_toml(path)


def sandbox_problems(manifests: list[Manifest], overlay: str, tmp: Path) -> list[str]:
    """Every sandbox router of the catalogue is in the inventory as a sandbox router, at the
    Service of a sandbox router Deployment of the cluster running its telco's agent, whose
    SANDBOX_ROUTERS serves it with the same platform on the port the Service targets."""
    found: list[str] = []
    inventory = _inventory(manifests, tmp)
    catalogue = parse_catalogue(tomllib.loads(DEFAULT_CATALOGUE.read_text()))
    wanted = {site.router for site in catalogue.sites.values() if site.sandbox}
    listed = {d.name for d in inventory if d.sandbox}
    if listed != wanted:
        found.append(f"inventory sandbox routers {sorted(listed)}, catalogue's {sorted(wanted)}")
    for site in (s for s in catalogue.sites.values() if s.sandbox):
        device = inventory.get(site.router)
        if device is not None and device.platform != site.platform:
            found.append(f"{site.router}: platform {device.platform}, catalogue {site.platform}")
    services = {s["metadata"]["name"]: s for s in of_kind(manifests, "Service")}
    served: dict[str, tuple[str, int, str]] = {}  # router -> (platform, port, deployment)
    for deployment in _routers(manifests):
        for item in parse_routers(_env(deployment).get("SANDBOX_ROUTERS", "")):
            served[item.name] = (item.platform, item.port, deployment["metadata"]["name"])
    for device in (d for d in inventory if d.sandbox):
        if device.telco not in SIDES[overlay]:
            continue
        if device.name not in served:
            found.append(f"{device.name}: no sandbox router Deployment serves it")
            continue
        platform, port, deployment = served[device.name]
        service = services.get(device.host)
        if platform != device.platform:
            found.append(f"{device.name}: served as {platform}, inventory says {device.platform}")
        if (
            service is None
            or service["spec"]["selector"].get("app.kubernetes.io/name") != deployment
        ):
            found.append(f"{device.name}: host {device.host} is not the Service of {deployment}")
            continue
        ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
        target = ports.get(device.port)
        (router,) = [d for d in _routers(manifests) if d["metadata"]["name"] == deployment]
        named = {p["name"]: p["containerPort"] for c in containers(router) for p in c["ports"]}
        if named.get(target, target) != port:
            found.append(f"{device.name}: {device.host}:{device.port} does not reach port {port}")
    real = {d.name for d in inventory if not d.sandbox}
    if served.keys() & real:
        found.append(f"a real router is simulated: {sorted(served.keys() & real)}")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_cluster_runs_its_telcos_sandbox_router_and_the_inventory_lists_it(
    overlay: str, tmp_path: Path
) -> None:
    manifests = render(overlay)
    names = {d["metadata"]["name"] for d in _routers(manifests)}
    assert names == {f"sandbox-router-{side}" for side in SIDES[overlay]}
    assert sandbox_problems(manifests, overlay, tmp_path) == []


def _set_inventory(manifests: list[Manifest], old: str, new: str) -> list[Manifest]:
    for m in of_kind(manifests, "ConfigMap"):
        if "inventory.toml" in m.get("data", {}):
            m["data"]["inventory.toml"] = m["data"]["inventory.toml"].replace(old, new)
    return manifests


def _set_env(manifests: list[Manifest], name: str, value: str) -> list[Manifest]:
    for deployment in _routers(manifests):
        for e in containers(deployment)[0]["env"]:
            if e["name"] == name:
                e["value"] = value
    return manifests


def _set_service_port(manifests: list[Manifest], name: str, port: int) -> list[Manifest]:
    for service in of_kind(manifests, "Service"):
        if service["metadata"]["name"] == name:
            service["spec"]["ports"][0]["port"] = port
    return manifests


SANDBOX_BREAKAGES: dict[str, Callable[[list[Manifest]], list[Manifest]]] = {
    "not marked sandbox": lambda m: _set_inventory(m, "sandbox = true", "sandbox = false"),
    "wrong host": lambda m: _set_inventory(m, '"sandbox-router-sg"', '"10.10.0.9"'),
    "wrong port": lambda m: _set_service_port(m, "sandbox-router-sg", 22),
    "wrong platform": lambda m: _set_env(m, "SANDBOX_ROUTERS", "sg-sandbox-edge=cq-vendor:2830"),
    "router not served": lambda m: [x for x in m if x["metadata"]["name"] != "sandbox-router-cq"],
}


@pytest.mark.parametrize("breakage", sorted(SANDBOX_BREAKAGES))
def test_a_broken_sandbox_wiring_is_caught(breakage: str, tmp_path: Path) -> None:
    manifests = render("dev")
    broken = SANDBOX_BREAKAGES[breakage](copy.deepcopy(manifests))
    assert broken != manifests, f"the mutation {breakage!r} no longer applies"
    assert sandbox_problems(broken, "dev", tmp_path)


def test_the_writable_paths_are_empty_dirs_and_the_keys_read_only_secrets() -> None:
    image_env = _image_env(parse(DOCKERFILE.read_text())[-1])
    for deployment in _routers(render("dev")):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = containers(deployment)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        env = _env(deployment)
        run = mounts[image_env["SANDBOX_RUN_DIR"]]
        assert "emptyDir" in volumes[run["name"]] and not run.get("readOnly")
        assert image_env["HOME"] == image_env["SANDBOX_RUN_DIR"]
        for key in ("SANDBOX_HOST_KEY_FILE", "SANDBOX_AUTHORIZED_KEYS_FILE"):
            mount = mounts[str(Path(env[key]).parent)]
            assert mount["readOnly"] is True
            assert "secret" in volumes[mount["name"]], key
        assert container["resources"]["limits"]["memory"] == "128Mi"
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"


# --- the image, statically ----------------------------------------------------------------


def _image_env(stage: Stage) -> dict[str, str]:
    return dict(pair.split("=", 1) for args in stage.arguments("ENV") for pair in args.split())


def image_problems(text: str) -> list[str]:
    stages = parse(text)
    final = stages[-1]
    found: list[str] = []
    if not (final.base.startswith("debian:bookworm-2") or "@sha256:" in final.base):
        found.append(f"base image {final.base} is not a pinned Debian bookworm")
    users = final.arguments("USER")
    if not users or not users[-1].split(":")[0].isdigit() or users[-1].startswith("0"):
        found.append("no numeric non-root USER")
    runs = " ".join(final.arguments("RUN"))
    for package in ("netconfd", "openssh-server", "python3"):
        if package not in runs:
            found.append(f"does not install Debian's {package}")
    found += [f"installs build tool {t.strip()}" for t in BUILD_TOOLS if t in runs.lower()]
    if "rm -f /etc/ssh/ssh_host_" not in runs:
        found.append("keeps the package's host keys (every image would share them)")
    copied = [args.split()[0] for args in final.arguments("COPY") + final.arguments("ADD")]
    found += [f"copies {src}" for src in copied if src.split("/")[0] in DEVELOPMENT]
    for platform in PLATFORMS:
        if f"services/provisioning/netconf_templates/{platform}/yang" not in copied:
            found.append(f"lacks the {platform} YANG modules")
    if "sandbox/routers.py" not in copied:
        found.append("lacks the entry point")
    cmd = final.arguments("CMD")
    if cmd != ['["' + '", "'.join([*SANDBOX_ENTRY, "serve"]) + '"]']:
        found.append(f"CMD {cmd} is not routers.py serve")
    exposed = {int(p) for args in final.arguments("EXPOSE") for p in args.split()}
    ports = {
        p["containerPort"]
        for d in _routers(render("dev"))
        for c in containers(d)
        for p in c["ports"]
    }
    if not ports <= exposed:
        found.append(f"EXPOSE {sorted(exposed)} lacks the manifests' ports {sorted(ports)}")
    return found


def test_the_sandbox_image_follows_every_rule() -> None:
    assert image_problems(DOCKERFILE.read_text()) == []


IMAGE_BREAKAGES = {
    "floating base": ("FROM debian:bookworm-20241202-slim", "FROM debian:bookworm-slim"),
    "root": ("USER 10001:10001", "USER 0"),
    "shared host keys": ("&& rm -f /etc/ssh/ssh_host_* \\\n", ""),
    "no yang": ("COPY services/provisioning/netconf_templates/cq-vendor/yang", "COPY x"),
    "devstack": ("COPY sandbox/routers.py", "COPY devstack/netconf.py"),
    "other port": ("EXPOSE 2830 2831", "EXPOSE 2830"),
}


@pytest.mark.parametrize("breakage", sorted(IMAGE_BREAKAGES))
def test_a_broken_sandbox_image_is_caught(breakage: str) -> None:
    old, new = IMAGE_BREAKAGES[breakage]
    text = DOCKERFILE.read_text()
    assert old in text, f"the mutation {breakage!r} no longer applies"
    assert image_problems(text.replace(old, new))


# --- the entry point's settings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "SANDBOX_ROUTERS is not set"),
        ("sg-sandbox-edge=openconfig", "not name=platform:port"),
        ("sg-sandbox-edge=openconfig:830", "a port 1024-65535"),
        ("a=openconfig:2830,a=cq-vendor:2831", "a router name is used twice"),
        ("a=openconfig:2830,b=cq-vendor:2830", "a router port is used twice"),
    ],
)
def test_a_bad_router_list_is_refused_naming_it(value: str, named: str) -> None:
    with pytest.raises(SetupError, match=named):
        parse_routers(value)


def test_serving_needs_the_authorised_keys_file(tmp_path: Path) -> None:
    env = {"SANDBOX_ROUTERS": "sg-sandbox-edge=openconfig:2830"}
    with pytest.raises(SetupError, match="SANDBOX_AUTHORIZED_KEYS_FILE"):
        load_settings(env, serving=True)
    with pytest.raises(SetupError, match="SANDBOX_START_TIMEOUT_S"):
        load_settings({**env, "SANDBOX_START_TIMEOUT_S": "soon"}, serving=False)
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA agent\n")
    settings = load_settings({**env, "SANDBOX_AUTHORIZED_KEYS_FILE": str(keys)}, serving=True)
    assert [r.port for r in settings.routers] == [2830]
