"""Where counter readings come from: the :class:`CounterSource` protocol and its production
implementation, NETCONF ``<get>`` of ietf-interfaces statistics.

The NETCONF source asks each router for ``/interfaces-state/interface[name]/statistics``
(``in-octets``, ``out-octets`` and, where the agent has it, ``discontinuity-time``) of the
interfaces the meter needs, in one ``<get>`` per router and poll, on a session kept open
between polls (a new SSH session costs about 0.2 s). The interface names asked for are the
circuits' sub-interface names, or what the router configuration maps them to.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape

from services.billing.meter.domain import Reading

log = logging.getLogger(__name__)

IETF_INTERFACES_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
_NS = {"if": IETF_INTERFACES_NS}


class CounterSourceError(Exception):
    """The router's counters could not be read this time (the poll becomes a gap)."""


class CounterSource(Protocol):
    """Reads the octet counters of some interfaces of one router."""

    def read(self, router_name: str, interface_names: Sequence[str]) -> dict[str, Reading]:
        """Readings by interface name; an interface the router does not report is absent.

        Raises :class:`CounterSourceError` when the router cannot be read at all.
        """
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RouterAccess:
    """How the meter reaches one router over NETCONF, and how it names interfaces there."""

    name: str
    host: str
    port: int
    username: str
    key_file: Path
    known_hosts_file: Path
    # Sub-interface name (e.g. "xe-0/0/1.100") -> the name the agent lists it under.
    interface_names: Mapping[str, str] = field(default_factory=dict)

    def agent_name(self, interface_name: str) -> str:
        return self.interface_names.get(interface_name, interface_name)


def statistics_filter(agent_names: Sequence[str]) -> str:
    """A subtree filter selecting the octet counters of exactly ``agent_names``."""
    entries = "".join(
        f"<interface><name>{escape(name)}</name><statistics>"
        "<discontinuity-time/><in-octets/><out-octets/>"
        "</statistics></interface>"
        for name in agent_names
    )
    return f'<interfaces-state xmlns="{IETF_INTERFACES_NS}">{entries}</interfaces-state>'


def parse_statistics(reply_xml: str, read_at: datetime) -> dict[str, Reading]:
    """Readings by agent interface name from a ``<get>`` reply; entries without both octet
    counters are left out (the agent does not count that interface)."""
    root = ET.fromstring(reply_xml)
    readings: dict[str, Reading] = {}
    for interface in root.iter(f"{{{IETF_INTERFACES_NS}}}interface"):
        name = interface.findtext("if:name", namespaces=_NS)
        in_octets = interface.findtext("if:statistics/if:in-octets", namespaces=_NS)
        out_octets = interface.findtext("if:statistics/if:out-octets", namespaces=_NS)
        if not name or in_octets is None or out_octets is None:
            continue
        discontinuity = interface.findtext("if:statistics/if:discontinuity-time", namespaces=_NS)
        readings[name] = Reading(
            in_octets=int(in_octets),
            out_octets=int(out_octets),
            read_at=read_at,
            discontinuity_time=(
                datetime.fromisoformat(discontinuity.replace("Z", "+00:00"))
                if discontinuity
                else None
            ),
        )
    return readings


def _utcnow() -> datetime:
    return datetime.now(UTC)


class NetconfCounterSource:
    """:class:`CounterSource` over NETCONF: one kept-open ncclient session per router.

    A failed ``<get>`` closes that router's session (the next poll reconnects) and raises
    :class:`CounterSourceError`. The host key is verified against the router's known_hosts.
    """

    def __init__(
        self,
        routers: Mapping[str, RouterAccess],
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._routers = dict(routers)
        self._timeout_s = timeout_s
        self._clock = clock
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def read(self, router_name: str, interface_names: Sequence[str]) -> dict[str, Reading]:
        access = self._routers.get(router_name)
        if access is None:
            raise CounterSourceError(
                f"router {router_name!r} is not in the meter's router configuration"
            )
        if not interface_names:
            return {}
        by_agent_name = {access.agent_name(name): name for name in interface_names}
        with self._lock:
            try:
                session = self._session(access)
                reply = session.get(filter=("subtree", statistics_filter(list(by_agent_name))))
                read_at = self._clock()
                readings = parse_statistics(reply.xml, read_at)
            except Exception as exc:
                self._drop_session(router_name)
                raise CounterSourceError(
                    f"cannot read counters of {router_name} at {access.host}:{access.port}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return {by_agent_name[name]: r for name, r in readings.items() if name in by_agent_name}

    def close(self) -> None:
        with self._lock:
            for name in list(self._sessions):
                self._drop_session(name)

    def _session(self, access: RouterAccess) -> Any:
        session = self._sessions.get(access.name)
        if session is not None and session.connected:
            return session
        from services.common.netconf import open_session

        try:
            session = open_session(
                host=access.host,
                port=access.port,
                username=access.username,
                key_path=access.key_file,
                known_hosts_path=access.known_hosts_file,
                timeout_s=self._timeout_s,
            )
        except ValueError as exc:
            raise CounterSourceError(str(exc)) from exc
        self._sessions[access.name] = session
        return session

    def _drop_session(self, router_name: str) -> None:
        session = self._sessions.pop(router_name, None)
        if session is None:
            return
        try:
            session.close_session()
        except Exception:
            log.debug("closing the NETCONF session to %s failed", router_name, exc_info=True)
