"""NETCONF sessions to the edge routers (ncclient over SSH), with host keys verified.

One :class:`NetconfSession` per router keeps its SSH session open and reopens it when it
drops. ncclient's raise mode stays ALL, so an rpc-error of any severity (a warning too)
fails the step. Every failure is raised as :class:`RouterFailure` with a
:class:`RouterFault` naming the router's own error text.

Every operation is a CLIENT span (``netconf <operation>``, RPC semantic conventions with
``rpc.system=netconf``) carrying the router's name and the confirmed commit's persist id,
a child of whatever span is current (the agent's step, an ops read).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ncclient.operations import RaiseMode, RPCError
from ncclient.operations.errors import TimeoutExpiredError
from ncclient.transport.errors import SessionError, SSHUnknownHostError, TransportError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.common.netconf import open_session
from services.provisioning.domain.faults import FaultKind, RouterFailure, RouterFault
from services.provisioning.inventory import Device

if TYPE_CHECKING:
    from ncclient.manager import Manager

T = TypeVar("T")

RETRYABLE_TAGS = frozenset({"lock-denied", "in-use", "resource-denied"})
# The NETCONF RPC behind each operation the agent names (the commit variants are <commit>).
RPC_OF_OPERATION = {"confirmed-commit": "commit", "confirming-commit": "commit"}

tracer = trace.get_tracer(__name__)


def fault_from_rpc_error(router: str, exc: RPCError) -> RouterFault:
    """One fault from an RPCError of either shape: several rpc-errors carry ``errors``,
    a single one carries ``tag`` and friends itself."""
    errors: list[Any] = list(getattr(exc, "errors", None) or [exc])
    first = errors[0]
    messages = [str(e.message or e.tag or "rpc-error").strip() for e in errors]
    tag = str(first.tag or "")
    raw = exc.xml
    return RouterFault(
        kind=FaultKind.RPC_ERROR,
        router_name=router,
        message="; ".join(dict.fromkeys(messages)),
        error_type=str(first.type or ""),
        error_tag=tag,
        error_severity=str(first.severity or ""),
        error_app_tag=str(first.app_tag or ""),
        error_path=str(first.path or "").strip(),
        raw=raw if isinstance(raw, str) else "",
        retryable=tag in RETRYABLE_TAGS or "confirmed-commit pending" in " ".join(messages),
    )


class NetconfSession:
    """One router's session; every call is serialised by an internal lock."""

    def __init__(self, device: Device, *, timeout_s: float = 30.0) -> None:
        self.device = device
        self._timeout_s = timeout_s
        self._manager: Manager | None = None
        self._lock = threading.RLock()
        self.capabilities: list[str] = []

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> Manager:
        try:
            m = open_session(
                host=self.device.host,
                port=self.device.port,
                username=self.device.username,
                key_path=self.device.key_path,
                known_hosts_path=self.device.known_hosts_path,
                timeout_s=self._timeout_s,
            )
        except ValueError as exc:
            raise RouterFailure(self._fault(FaultKind.INTERNAL, str(exc))) from exc
        m.raise_mode = RaiseMode.ALL
        self.capabilities = sorted(m.server_capabilities)
        return m

    def _fault(self, kind: FaultKind, message: str, *, retryable: bool = False) -> RouterFault:
        return RouterFault(kind, self.device.name, message, retryable=retryable)

    def close(self) -> None:
        with self._lock:
            m, self._manager = self._manager, None
            if m is not None:
                with contextlib.suppress(Exception):
                    m.close_session()

    def _drop(self) -> None:
        m, self._manager = self._manager, None
        if m is not None:
            with contextlib.suppress(Exception):
                m._session.close()

    def call(self, what: str, operation: Callable[[Manager], T], *, persist_id: str = "") -> T:
        """Run ``operation`` (the NETCONF operation named ``what``) on the open session,
        opening it first if needed, inside a span of its own."""
        attributes: dict[str, str | int] = {
            "rpc.system": "netconf",
            "rpc.method": RPC_OF_OPERATION.get(what, what),
            "server.address": self.device.host,
            "server.port": self.device.port,
            "idc.router.name": self.device.name,
            "idc.netconf.operation": what,
        }
        if persist_id:
            attributes["idc.netconf.persist_id"] = persist_id
        with tracer.start_as_current_span(
            f"netconf {what}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                return self._call(what, operation)
            except RouterFailure as exc:
                span.set_attribute("error.type", exc.fault.kind.name)
                raise

    def _call(self, what: str, operation: Callable[[Manager], T]) -> T:
        with self._lock:
            try:
                if self._manager is None or not self._manager.connected:
                    self._drop()
                    self._manager = self._connect()
                return operation(self._manager)
            except RPCError as exc:
                raise RouterFailure(fault_from_rpc_error(self.device.name, exc)) from exc
            except SSHUnknownHostError as exc:
                self._drop()
                raise RouterFailure(
                    self._fault(
                        FaultKind.TRANSPORT,
                        f"host key of {self.device.management_address} "
                        f"is unknown or changed; refusing to connect: {exc}",
                    )
                ) from exc
            except TimeoutExpiredError as exc:
                self._drop()
                raise RouterFailure(
                    self._fault(FaultKind.TIMEOUT, f"{what}: no answer: {exc}", retryable=True)
                ) from exc
            # SessionError: no <hello> in time (a router that accepts SSH but is stalled).
            except (TimeoutError, TransportError, SessionError, OSError, EOFError) as exc:
                self._drop()
                raise RouterFailure(
                    self._fault(
                        FaultKind.TRANSPORT, f"{what}: {type(exc).__name__}: {exc}", retryable=True
                    )
                ) from exc

    # -- operations ---------------------------------------------------------------------

    def lock_candidate(self) -> None:
        self.call("lock", lambda m: m.lock(target="candidate"))

    def unlock_candidate(self) -> None:
        self.call("unlock", lambda m: m.unlock(target="candidate"))

    def edit_candidate(self, config: str) -> None:
        # No <validate> of the candidate: on yuma123 a validate before commit loses the
        # edit. edit-config validates against the YANG, and commit does again.
        self.call("edit-config", lambda m: m.edit_config(target="candidate", config=config))

    def discard(self) -> None:
        self.call("discard-changes", lambda m: m.discard_changes())

    def commit(self) -> None:
        self.call("commit", lambda m: m.commit())

    def confirmed_commit(self, persist_id: str, timeout_s: int) -> None:
        self.call(
            "confirmed-commit",
            lambda m: m.commit(confirmed=True, timeout=str(timeout_s), persist=persist_id),
            persist_id=persist_id,
        )

    def confirm(self, persist_id: str) -> None:
        self.call(
            "confirming-commit", lambda m: m.commit(persist_id=persist_id), persist_id=persist_id
        )

    def cancel(self, persist_id: str) -> None:
        self.call(
            "cancel-commit",
            lambda m: m.cancel_commit(persist_id=persist_id),
            persist_id=persist_id,
        )

    def confirmed_commit_more(self, persist_id: str, timeout_s: int) -> None:
        """A follow-up confirmed commit: the candidate's new edits join the pending confirmed
        commit ``persist_id`` (still persistent; its timeout restarts), so a cancel reverts
        them with it and one confirming commit keeps them all (RFC 6241 8.4)."""
        self.call(
            "confirmed-commit",
            lambda m: m.commit(confirmed=True, timeout=str(timeout_s), persist_id=persist_id),
            persist_id=persist_id,
        )

    def running(self, subtree: str | None = None) -> str:
        """The running configuration, or only what the ``subtree`` filter selects."""
        source_filter = ("subtree", subtree) if subtree is not None else None
        return self.call(
            "get-config",
            lambda m: str(m.get_config(source="running", filter=source_filter).data_xml),
        )

    def probe(self) -> bool:
        """True when the router answers (opens the session if needed)."""
        try:
            self.call("hello", lambda m: m.connected)
        except RouterFailure:
            return False
        return True


def read_running(device: Device) -> str:
    """One read of a router's running configuration on a session of its own (ops reads,
    recovery), so it never waits behind the agent's transaction."""
    session = NetconfSession(device, timeout_s=10)
    try:
        return session.running()
    finally:
        session.close()
