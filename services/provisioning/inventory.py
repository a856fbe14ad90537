"""The edge routers the service manages, from a data file.

``IDC_PROVISIONING_INVENTORY`` selects the source:

* a path to a TOML file with ``[[router]]`` tables (``data/inventory.toml`` shows the
  production shape);
* ``devstack``: the routers the devstack started, from the JSON file named by
  ``IDC_DEVSTACK_FILE`` (``make run`` writes ``var/devstack.json``).

Unset: ``devstack`` when ``IDC_DEVSTACK_FILE`` is set, else ``data/inventory.toml``.

A router with ``sandbox = true`` is a simulated sandbox router (README "Sandbox"): only
sandbox circuits are configured on it, and a sandbox circuit on no other.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.config import ConfigError
from services.provisioning.domain.circuits import CIRCUIT_ID_RE, SIDE_OF_TELCO, Side

DEFAULT_INVENTORY = Path(__file__).parent / "data" / "inventory.toml"
DEVSTACK = "devstack"
PLATFORMS = ("openconfig", "cq-vendor")


@dataclass(frozen=True)
class Device:
    name: str
    telco: str
    site: str
    vendor: str
    platform: str
    host: str
    port: int
    username: str
    key_path: Path
    known_hosts_path: Path
    sandbox: bool = False

    @property
    def side(self) -> Side:
        return SIDE_OF_TELCO[self.telco]

    @property
    def management_address(self) -> str:
        return f"{self.host}:{self.port}"


class Inventory:
    def __init__(self, devices: Iterable[Device]) -> None:
        self._devices = {d.name: d for d in devices}

    def __iter__(self) -> Iterator[Device]:
        return iter(sorted(self._devices.values(), key=lambda d: d.name))

    def get(self, name: str) -> Device | None:
        return self._devices.get(name)

    def of_telco(self, telco: str) -> list[Device]:
        return [d for d in self if d.telco == telco]


def _device(raw: Mapping[str, Any], base: Path, where: str) -> Device:
    def field(key: str, *aliases: str) -> Any:
        for name in (key, *aliases):
            if name in raw:
                return raw[name]
        raise ConfigError(f"{where}: router {raw.get('name', '?')!r} lacks {key!r}")

    def path(key: str, *aliases: str) -> Path:
        value = Path(str(field(key, *aliases)))
        return value if value.is_absolute() else base / value

    name = str(field("name"))
    telco = str(field("telco"))
    platform = str(field("platform"))
    if not CIRCUIT_ID_RE.match(name):
        raise ConfigError(f"{where}: router name {name!r} is not valid")
    if telco not in SIDE_OF_TELCO:
        raise ConfigError(f"{where}: router {name}: telco must be one of {sorted(SIDE_OF_TELCO)}")
    if platform not in PLATFORMS:
        raise ConfigError(f"{where}: router {name}: platform must be one of {PLATFORMS}")
    try:
        port = int(field("port"))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: router {name}: port must be a number") from None
    return Device(
        name=name,
        telco=telco,
        site=str(raw.get("site", f"{telco}-site-1")),
        vendor=str(raw.get("vendor", platform)),
        platform=platform,
        host=str(field("host")),
        port=port,
        username=str(field("username", "user")),
        key_path=path("key_path"),
        known_hosts_path=path("known_hosts_path", "known_hosts"),
        sandbox=bool(raw.get("sandbox", False)),
    )


def load_toml(path: Path) -> Inventory:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc}") from exc
    return Inventory(_device(r, path.parent, str(path)) for r in data.get("router", []))


def load_devstack(path: Path) -> Inventory:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read devstack description {path}: {exc}") from exc
    return Inventory(_device(r, path.parent, str(path)) for r in data.get("routers", []))


def load_inventory(env: Mapping[str, str] | None = None) -> Inventory:
    env = os.environ if env is None else env
    choice = env.get("IDC_PROVISIONING_INVENTORY", "").strip()
    devstack_file = env.get("IDC_DEVSTACK_FILE", "").strip()
    if choice == DEVSTACK or (not choice and devstack_file):
        if not devstack_file:
            raise ConfigError("IDC_PROVISIONING_INVENTORY=devstack needs IDC_DEVSTACK_FILE")
        return load_devstack(Path(devstack_file))
    return load_toml(Path(choice) if choice else DEFAULT_INVENTORY)
