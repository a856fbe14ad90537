"""Rendering a circuit end into a router platform's NETCONF payload.

A platform is a folder of ``netconf_templates/`` whose ``platform.toml`` names, in its
``[templates]`` table, one Jinja2 template per operation (``create``, ``modify``,
``delete``) and the template set's ``version``. Templates render with XML autoescaping on
(set explicitly, not inferred from file names) and ``StrictUndefined``; they only ever see
the values of a validated :class:`CircuitEnd`.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from idc.type.v1 import router_payload_pb2
from services.provisioning.domain.circuits import CircuitEnd, Operation, Side

TEMPLATES_ROOT = Path(__file__).resolve().parent / "netconf_templates"
PAYLOAD_FORMAT = "netconf-xml"


class PlatformError(Exception):
    """A platform folder or its templates are missing or malformed (a deployment fault)."""


@dataclass(frozen=True)
class RenderedPayload:
    content: str
    sha256: str
    template_version: str


def payload_sha256(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


class PlatformTemplates:
    """The templates of one platform, loaded once."""

    def __init__(self, name: str, root: Path = TEMPLATES_ROOT) -> None:
        directory = root / name
        manifest = directory / "platform.toml"
        try:
            data = tomllib.loads(manifest.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PlatformError(f"platform {name!r}: cannot read {manifest}: {exc}") from exc
        table = data.get("templates")
        if not isinstance(table, dict):
            raise PlatformError(f"{manifest}: [templates] table missing")
        missing = [
            op.template_key for op in Operation if not isinstance(table.get(op.template_key), str)
        ]
        if missing or not isinstance(table.get("version"), str):
            raise PlatformError(f"{manifest}: [templates] needs version, create, modify, delete")
        self.name = name
        self.version: str = table["version"]
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory / str(data.get("templates_dir", "templates"))),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        try:
            self._templates = {
                op: environment.get_template(table[op.template_key]) for op in Operation
            }
        except jinja2.TemplateError as exc:
            raise PlatformError(f"platform {name!r}: bad template: {exc}") from exc

    def render(self, operation: Operation, end: CircuitEnd) -> RenderedPayload:
        content = self._templates[operation].render(
            interface=end.interface,
            vlan=end.vlan,
            description=end.router_description,
            cir_bps=end.cir_bps,
            cir_kbps=end.cir_kbps,
            burst_bytes=end.burst_bytes,
        )
        return RenderedPayload(content, payload_sha256(content), self.version)


class Renderer:
    """Renders for every platform under ``root`` (platforms are loaded on first use)."""

    def __init__(self, root: Path = TEMPLATES_ROOT) -> None:
        self._root = root
        self._platforms: dict[str, PlatformTemplates] = {}

    def platform(self, name: str) -> PlatformTemplates:
        if name not in self._platforms:
            self._platforms[name] = PlatformTemplates(name, self._root)
        return self._platforms[name]

    def render(self, platform: str, operation: Operation, end: CircuitEnd) -> RenderedPayload:
        return self.platform(platform).render(operation, end)

    def router_payload(
        self, platform: str, telco: str, side: Side, operation: Operation, end: CircuitEnd
    ) -> router_payload_pb2.RouterPayload:
        rendered = self.render(platform, operation, end)
        return router_payload_pb2.RouterPayload(
            side=side.value,
            telco_id=telco,
            router_name=end.router_name,
            platform=platform,
            circuit_id=end.circuit_id,
            operation=operation.value,
            format=PAYLOAD_FORMAT,
            content=rendered.content,
            sha256=rendered.sha256,
            template_version=rendered.template_version,
        )
