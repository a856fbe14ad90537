"""Sites, edge routers and customer ports of both sides, loaded from a TOML data file.

Router names, interface names and VLAN ranges go into every router payload, so a
catalogue entry provisioning could not render (services.common.limits) stops the service
at start, naming the entry.

Sandbox (README "Sandbox"): sites marked ``sandbox = true`` sit on simulated routers of
their own, never on a router of a real site; the ``[sandbox]`` table names the tenants that
order them (and only them) and the capacity of the sandbox pool, which stands in for the
channel for their circuits. Whether a circuit is a sandbox one follows from its ports' site,
so a site's flag must not change while it carries circuits.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.limits import MAX_VLAN, MIN_VLAN, is_id, is_interface

DEFAULT_CATALOGUE = Path(__file__).resolve().parent.parent / "data" / "catalogue.toml"


class Side(enum.StrEnum):
    SINGAPORE = "SINGAPORE"
    CHONGQING = "CHONGQING"


@dataclass(frozen=True)
class Telco:
    id: str
    name: str
    side: Side


@dataclass(frozen=True)
class Port:
    id: str
    site_id: str
    name: str
    speed_mbps: int
    vlan_first: int
    vlan_last: int
    tenant: str = ""

    @property
    def vlan_count(self) -> int:
        return self.vlan_last - self.vlan_first + 1

    def visible_to(self, tenant: str | None) -> bool:
        """Shared ports are for everyone; a dedicated port only for its tenant (or staff)."""
        return not self.tenant or tenant is None or self.tenant == tenant


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    side: Side
    telco: Telco
    city: str
    router: str
    platform: str
    ports: tuple[Port, ...]
    sandbox: bool = False


class CatalogueError(ValueError):
    """The catalogue file is inconsistent; the message names the entry."""


@dataclass(frozen=True)
class Catalogue:
    telcos: Mapping[str, Telco]
    sites: Mapping[str, Site]
    ports: Mapping[str, Port]
    sandbox_tenants: frozenset[str] = frozenset()
    sandbox_capacity_mbps: int = 0

    def is_sandbox_tenant(self, tenant: str | None) -> bool:
        return tenant is not None and tenant in self.sandbox_tenants

    def is_sandbox_port(self, port_id: str) -> bool:
        port = self.ports.get(port_id)
        return port is not None and self.sites[port.site_id].sandbox

    def offered_to(self, site: Site, tenant: str | None) -> bool:
        """Staff (no tenant) see every site; a sandbox tenant only sandbox sites, any other
        tenant only real ones."""
        return tenant is None or site.sandbox == self.is_sandbox_tenant(tenant)

    def site_of(self, port: Port) -> Site:
        return self.sites[port.site_id]

    def side_of(self, port: Port) -> Side:
        return self.sites[port.site_id].side

    def telco_for_side(self, side: Side) -> Telco:
        for telco in self.telcos.values():
            if telco.side is side:
                return telco
        raise CatalogueError(f"no telco runs the {side} side")

    def side_of_telco(self, telco_id: str) -> Side | None:
        telco = self.telcos.get(telco_id)
        return None if telco is None else telco.side


def load_catalogue(path: Path = DEFAULT_CATALOGUE) -> Catalogue:
    with path.open("rb") as file:
        return parse_catalogue(tomllib.load(file))


def _parse_port(raw: Mapping[str, Any], site_id: str, router: str) -> Port:
    port = Port(
        id=f"{router}:{raw['name']}",
        site_id=site_id,
        name=str(raw["name"]),
        speed_mbps=int(raw["speed_mbps"]),
        vlan_first=int(raw["vlan_first"]),
        vlan_last=int(raw["vlan_last"]),
        tenant=str(raw.get("tenant", "")),
    )
    if not is_interface(port.name):
        raise CatalogueError(f"port {port.id}: {port.name!r} is not an interface name the "
                             "routers accept (such as xe-0/0/1)")
    if not MIN_VLAN <= port.vlan_first <= port.vlan_last <= MAX_VLAN:
        raise CatalogueError(f"port {port.id}: VLAN range must lie within {MIN_VLAN}..{MAX_VLAN}")
    if port.speed_mbps <= 0:
        raise CatalogueError(f"port {port.id}: speed must be positive")
    return port


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    telcos: dict[str, Telco] = {}
    for entry in data.get("telcos", []):
        telco = Telco(str(entry["id"]), str(entry["name"]), Side(entry["side"]))
        if telco.id in telcos:
            raise CatalogueError(f"telco {telco.id} is listed twice")
        telcos[telco.id] = telco
    if {t.side for t in telcos.values()} != set(Side):
        raise CatalogueError("the catalogue needs exactly one telco per side")
    sites: dict[str, Site] = {}
    ports: dict[str, Port] = {}
    for entry in data.get("sites", []):
        site_id = str(entry["id"])
        site_telco = telcos.get(str(entry["telco"]))
        if site_telco is None:
            raise CatalogueError(f"site {site_id}: unknown telco {entry['telco']!r}")
        side = Side(entry["side"])
        if site_telco.side is not side:
            raise CatalogueError(
                f"site {site_id}: telco {site_telco.id} runs the {site_telco.side} side"
            )
        router = str(entry["router"])
        if not is_id(router):
            raise CatalogueError(f"site {site_id}: router name {router!r} is not 1 to 64 "
                                 "letters, digits or . _ : -, starting alphanumeric")
        site_ports = []
        for raw in entry.get("ports", []):
            port = _parse_port(raw, site_id, router)
            if port.id in ports:
                raise CatalogueError(f"port {port.id} is listed twice")
            ports[port.id] = port
            site_ports.append(port)
        if site_id in sites:
            raise CatalogueError(f"site {site_id} is listed twice")
        sites[site_id] = Site(
            id=site_id,
            name=str(entry["name"]),
            side=side,
            telco=site_telco,
            city=str(entry["city"]),
            router=router,
            platform=str(entry["platform"]),
            ports=tuple(site_ports),
            sandbox=bool(entry.get("sandbox", False)),
        )
    return Catalogue(telcos=telcos, sites=sites, ports=ports,
                     **_sandbox(data.get("sandbox", {}), sites))


def _sandbox(raw: Mapping[str, Any], sites: Mapping[str, Site]) -> dict[str, Any]:
    """The ``[sandbox]`` table, checked: sandbox sites never share a router with real
    ones, and sandbox sites come with a pool to admit their circuits into."""
    real_routers = {site.router for site in sites.values() if not site.sandbox}
    for site in sites.values():
        if site.sandbox and site.router in real_routers:
            raise CatalogueError(f"site {site.id}: a sandbox site needs a router of its own, "
                                 f"not {site.router} of a real site")
    tenants = frozenset(str(tenant) for tenant in raw.get("tenants", []))
    capacity = int(raw.get("capacity_mbps", 0))
    if any(site.sandbox for site in sites.values()) and capacity <= 0:
        raise CatalogueError("sandbox.capacity_mbps: the sandbox sites need a positive "
                             "sandbox pool")
    return {"sandbox_tenants": tenants, "sandbox_capacity_mbps": capacity}
