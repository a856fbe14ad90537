"""The meter's own settings (``IDC_METER_*``) and its router configuration file.

Router file (TOML), one table per router the meter may poll::

    [routers."sg-edge-1"]
    host = "10.0.0.1"
    port = 830
    username = "meter"
    key_file = "/etc/idc/meter/id_ed25519"
    known_hosts_file = "/etc/idc/meter/known_hosts"

    # Optional: sub-interface name -> the name the router's agent lists it under in
    # ietf-interfaces, for routers that do not name sub-interfaces "<interface>.<vlan>".
    # The devstack uses it to map "xe-0/0/1.100" to a Linux veth (kernel names cannot
    # contain "/").
    [routers."sg-edge-1".interfaces]
    "xe-0/0/1.100" = "ic3f9a1c0r"
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from idc.type.v1 import side_pb2
from services.billing.meter.source import RouterAccess
from services.common.config import ConfigError

DEFAULT_INTERVAL_S = 300

_SIDES = {
    "singapore": side_pb2.SIDE_SINGAPORE,
    "chongqing": side_pb2.SIDE_CHONGQING,
}


@dataclass(frozen=True)
class MeterSettings:
    """``interval_s``: length of a usage interval and the poll period (5 minutes; tests use
    seconds). ``sides``: which ends of each circuit are metered (both by default: billing
    bills one and reconciles the other; one sample per circuit, side and interval).
    ``routers_file``: the TOML above."""

    interval_s: int = DEFAULT_INTERVAL_S
    sides: tuple[int, ...] = (side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING)
    routers_file: Path = Path("var/meter-routers.toml")
    consumer_group: str = "meter"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MeterSettings:
        env = os.environ if env is None else env
        var_dir = env.get("IDC_VAR_DIR", "").strip() or "var"
        raw_interval = env.get("IDC_METER_INTERVAL_S", "").strip()
        interval = DEFAULT_INTERVAL_S
        if raw_interval:
            if not raw_interval.isdigit() or not 1 <= int(raw_interval) <= 3600:
                raise ConfigError(
                    f"IDC_METER_INTERVAL_S={raw_interval!r} is not valid: expected whole "
                    "seconds from 1 to 3600 (300 in production)"
                )
            interval = int(raw_interval)
        if env.get("IDC_METER_SIDE", "").strip():
            raise ConfigError(
                "IDC_METER_SIDE is no longer read: both ends are metered; set IDC_METER_SIDES "
                "(comma-separated, default singapore,chongqing) to meter fewer"
            )
        raw_sides = env.get("IDC_METER_SIDES", "").strip() or "singapore,chongqing"
        names = [name.strip() for name in raw_sides.split(",")]
        unknown = [name for name in names if name not in _SIDES]
        if unknown or len(set(names)) != len(names):
            raise ConfigError(
                f"IDC_METER_SIDES={raw_sides!r} is not valid: expected distinct names among "
                f"{', '.join(_SIDES)}"
            )
        routers_file = env.get("IDC_METER_ROUTERS_FILE", "").strip()
        group = env.get("IDC_METER_CONSUMER_GROUP", "").strip() or "meter"
        return cls(
            interval_s=interval,
            sides=tuple(_SIDES[name] for name in names),
            routers_file=Path(routers_file)
            if routers_file
            else Path(var_dir) / "meter-routers.toml",
            consumer_group=group,
        )


def load_routers(path: Path) -> dict[str, RouterAccess]:
    """Parse the router file into ``RouterAccess`` values by router name.

    A missing file means no router is reachable yet (every poll is a gap, logged); a file
    that does not parse stops the meter at start with the problem named.
    """
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"meter router file {path}: {exc}") from exc
    routers: dict[str, RouterAccess] = {}
    for name, table in dict(data.get("routers", {})).items():
        where = f"{path}: routers.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        missing = [
            key
            for key in ("host", "port", "username", "key_file", "known_hosts_file")
            if key not in table
        ]
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(missing)}")
        port = table["port"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"{where}.port={port!r} is not a TCP port")
        interfaces = table.get("interfaces", {})
        if not isinstance(interfaces, dict) or not all(
            isinstance(v, str) and v for v in interfaces.values()
        ):
            raise ConfigError(f"{where}.interfaces must map names to non-empty names")
        routers[name] = RouterAccess(
            name=name,
            host=str(table["host"]),
            port=port,
            username=str(table["username"]),
            key_file=Path(str(table["key_file"])),
            known_hosts_file=Path(str(table["known_hosts_file"])),
            interface_names=dict(interfaces),
        )
    return routers


def dump_routers(routers: Iterable[RouterAccess]) -> str:
    """The router file for ``routers`` (what :func:`load_routers` reads back)."""

    def quote(value: str) -> str:
        # A JSON string is a valid TOML basic string for these values.
        return json.dumps(value)

    lines: list[str] = []
    for access in routers:
        lines += [
            f"[routers.{quote(access.name)}]",
            f"host = {quote(access.host)}",
            f"port = {access.port}",
            f"username = {quote(access.username)}",
            f"key_file = {quote(str(access.key_file))}",
            f"known_hosts_file = {quote(str(access.known_hosts_file))}",
            "",
        ]
        if access.interface_names:
            lines.append(f"[routers.{quote(access.name)}.interfaces]")
            lines += [f"{quote(k)} = {quote(v)}" for k, v in access.interface_names.items()]
            lines.append("")
    return "\n".join(lines)
