"""The built wheel is the product: it carries every file the services open, none of the
development code, and a service runs from it installed in a fresh virtual environment.

The fresh environment gets the project's dependencies through a ``.pth`` line naming this
environment's site-packages (nothing is downloaded), then the wheel with ``--no-deps``. A
plain path line does not run the ``.pth`` files found there, so the editable install of the
checkout stays invisible; everything runs from an empty working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.process import free_port, spawn
from devstack.services import ServiceProcess, wait_serving

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEVELOPMENT = {"devstack", "tests", "bench", "tools"}
CREATE_TEMPLATE = (
    "services/provisioning/netconf_templates/openconfig/templates/circuit-create.xml.j2"
)
# Run by the installed interpreter: every data file a service opens at start, read through
# the package's own paths, and a CREATE payload rendered for each router platform.
PROBE = """
import importlib.util, json, sys, services
from idc.events.v1 import common_pb2
from idc.type.v1 import side_pb2
from services.billing.directory import load_directory
from services.common.service_table import SERVICES
from services.console.app import HERE as CONSOLE
from services.order.domain.catalogue import load_catalogue
from services.order.domain.pricing import load_price_book
from services.provisioning.domain.circuits import Operation, Side, circuit_end
from services.provisioning.inventory import DEFAULT_INVENTORY, load_toml
from services.provisioning.rendering import TEMPLATES_ROOT, Renderer

load_catalogue(), load_price_book(), load_toml(DEFAULT_INVENTORY), load_directory()
end = dict(telco_id="x", router_name="edge-1", interface_name="xe-0/0/1", vlan_id=100)
circuit = common_pb2.CircuitParameters(
    circuit_id="CKT-1", tenant_id="t", bandwidth_mbps=100, description="wheel",
    a_end=common_pb2.CircuitEndpoint(side=side_pb2.SIDE_SINGAPORE, **end),
    z_end=common_pb2.CircuitEndpoint(side=side_pb2.SIDE_CHONGQING, **end),
)
renderer = Renderer()
print(json.dumps({
    "services": services.__file__,
    "templates": str(TEMPLATES_ROOT),
    "importable": [m for m in ("devstack", "tests", "bench", "tools")
                   if importlib.util.find_spec(m) is not None],
    "editable": [m for m in sys.modules if "__editable__" in m],
    "outside": [m.__file__ for name, m in list(sys.modules.items())
                if name.split(".")[0] in ("services", "idc")
                and not (m.__file__ or "").startswith(sys.prefix)],
    "console_templates": sorted(p.name for p in (CONSOLE / "templates").glob("*.html")),
    "static": sorted(p.name for p in (CONSOLE / "static").iterdir()),
    "mako": [(s.migrations / "script.py.mako").is_file() for s in SERVICES if s.migrations],
    "payloads": {
        platform: renderer.render(platform, Operation.CREATE, circuit_end(circuit, side)).content
        for platform, side in (("openconfig", Side.SINGAPORE), ("cq-vendor", Side.CHONGQING))
    },
}))
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    site_packages: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**base, **extra}


def _run(
    argv: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _tracked(*paths: str) -> list[str]:
    return _run(["git", "ls-files", "-z", *paths], cwd=REPO).strip("\0").split("\0")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    # Built from the committed files only, so nothing lying around in the checkout ships.
    source = root / "source"
    for name in _tracked("pyproject.toml", "services", "idc"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
          "--no-build-isolation", "--wheel-dir", root / "dist", source])
    (wheel,) = (root / "dist").glob("idc_orchestrator-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # --ignore-installed: this pip also sees the checkout's environment and must not
    # uninstall the editable install there.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
          "--no-index", "--ignore-installed", wheel])
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(_run([python, "-c", where]).strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site_packages / "idc-test-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    workdir = root / "cwd"
    workdir.mkdir()
    return Installed(wheel, python, site_packages, workdir)


def test_the_wheel_carries_every_shipped_file_and_no_development_code(
    installed: Installed,
) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    shipped = {n for n in _tracked("services", "idc") if Path(n).name != "README.md"}
    assert CREATE_TEMPLATE in shipped and "services/order/data/price_book.toml" in shipped
    assert sorted(shipped - names) == []
    assert sorted(n for n in names if n.split("/")[0] in DEVELOPMENT) == []
    assert not any(n.startswith("netconf_templates/") for n in names)


def test_the_installed_package_reads_its_data_and_renders_both_platforms(
    installed: Installed,
) -> None:
    out = _run([installed.python, "-c", PROBE], cwd=installed.workdir, env=installed.env())
    found = json.loads(out.strip().splitlines()[-1])
    assert Path(found["services"]).is_relative_to(installed.site_packages)
    assert Path(found["templates"]).is_relative_to(installed.site_packages)
    assert found["importable"] == [] and found["editable"] == [] and found["outside"] == []
    assert "base.html" in found["console_templates"]
    assert found["static"] == ["console.css", "console.js"]
    assert found["mako"] and all(found["mako"])
    assert "<vlan-id>100</vlan-id>" in found["payloads"]["openconfig"]
    assert "wheel" in found["payloads"]["cq-vendor"]


def test_the_order_service_serves_from_the_installed_package(
    installed: Installed, kafka_bootstrap: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = installed.env(
        IDC_KAFKA_BOOTSTRAP=kafka_bootstrap,
        IDC_ORDER_DATABASE_URL=f"sqlite:///{tmp_path / 'order.db'}",
        IDC_ORDER_LISTEN=address,
        IDC_VAR_DIR=str(tmp_path),
        IDC_TOKEN_PEPPER="test-pepper",
        IDC_DEV_MODE="true",
        IDC_GRACE_PERIOD_S="3",
    )
    log = tmp_path / "order.log"
    proc = spawn([installed.python, "-m", "services.order"], env=env, cwd=installed.workdir,
                 log_path=log)
    service = ServiceProcess(name="order", address=address, proc=proc, log_path=log)
    try:
        wait_serving(service)
    finally:
        assert service.terminate() == 0, log.read_text()
    assert '"message": "order stopped"' in log.read_text()
