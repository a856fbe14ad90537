"""NETCONF sessions to the edge routers (ncclient over SSH), with host keys verified.

One :class:`NetconfSession` per router keeps its SSH session open and reopens it when it
drops. Every failure is raised as :class:`RouterFailure` with a :class:`RouterFault`
naming the router's own error text:

* A reply with an rpc-error of severity ``error`` (or of no known severity) fails the step,
  classified by its first such error, whatever warnings come before it.
* A reply holding only warnings is a success (RFC 6241 4.3: a warning does not fail the
  operation); the warnings are logged and recorded on the span. Every step that changes
  the router is read back from running by the agent, so a router that wrongly warns
  instead of failing is caught there, while failing on a warning would record as not
  applied a step the router did apply.
* A reply refused unread (larger than ``IDC_PROVISIONING_MAX_REPLY_BYTES``, with a DTD, or
  not XML: see services/common/netconf.py) is a ``TRANSPORT`` fault: the session is
  closed, and whether the router did the step is unknown.
* A lock refused because another session holds it says "locked by another session"; one
  refused because another session left the candidate edited without a lock says so too
  (the router refuses every lock until those edits are discarded, and they are never
  discarded without our lock: :attr:`NetconfSession.holds_lock`).

Every operation is a CLIENT span (``netconf <operation>``, RPC semantic conventions with
``rpc.system=netconf``) carrying the router's name and the confirmed commit's persist id,
a child of whatever span is current (the agent's step, an ops read).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from lxml import etree
from ncclient.manager import Manager
from ncclient.operations import RaiseMode
from ncclient.operations.errors import TimeoutExpiredError
from ncclient.operations.rpc import RPCReply
from ncclient.transport.errors import SessionError, SSHUnknownHostError, TransportError
from ncclient.xml_ import qualify, to_xml
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.common.config import non_negative_int
from services.common.netconf import (
    DEFAULT_MAX_REPLY_BYTES,
    ReplyRefused,
    ReplyTooLarge,
    open_session,
)
from services.provisioning.domain.faults import FaultKind, RouterFailure, RouterFault
from services.provisioning.inventory import Device
from services.provisioning.metrics import REACHABILITY

T = TypeVar("T")

MAX_REPLY_BYTES_SETTING = "IDC_PROVISIONING_MAX_REPLY_BYTES"
RETRYABLE_TAGS = frozenset({"lock-denied", "in-use", "resource-denied"})
# The NETCONF RPC behind each operation the agent names (the commit variants are <commit>).
RPC_OF_OPERATION = {"confirmed-commit": "commit", "confirming-commit": "commit"}
# netconfd's refusal of a lock while the candidate holds edits made without one (measured).
DIRTY_CANDIDATE = "discard-changes needed"
COMMIT_PENDING = "confirmed-commit pending"
# A fault travels in events and the log: a router's words are kept to this many characters.
MESSAGE_LIMIT, RAW_LIMIT = 1000, 4000

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 15.0

tracer = trace.get_tracer(__name__)


def max_reply_bytes(env: Mapping[str, str]) -> int:
    """The cap on one message from a router (0 or unset: the default, 16 MiB)."""
    return non_negative_int(env, MAX_REPLY_BYTES_SETTING, 0) or DEFAULT_MAX_REPLY_BYTES


def is_warning(error: Any) -> bool:
    """Whether an rpc-error is only a warning (any other severity, or none, fails)."""
    return str(error.severity or "").strip() == "warning"


def explain(tag: str, text: str) -> str:
    """The router's text, prefixed with what a refused lock or write means (the session
    holding the lock is named in the fault's raw reply)."""
    if DIRTY_CANDIDATE in text:
        return (
            "candidate holds uncommitted changes another session made without a lock; the "
            "router refuses every lock until they are discarded, and the agent never "
            f"discards them without holding the lock: {text}"
        )
    if tag == "lock-denied" or (tag == "in-use" and COMMIT_PENDING not in text):
        return f"candidate locked by another session: {text}"
    return text


def fault_from_rpc_errors(router: str, errors: Sequence[Any], raw: str = "") -> RouterFault:
    """One fault from a reply's rpc-errors (at least one not a warning): classified by the
    first error that is not a warning; the message lists the errors, then the warnings."""
    failing = [e for e in errors if not is_warning(e)]
    first = failing[0]
    texts = [str(e.message or e.tag or "rpc-error").strip() for e in failing]
    texts += [f"warning: {str(e.message or e.tag).strip()}" for e in errors if is_warning(e)]
    messages = list(dict.fromkeys(texts))
    tag = str(first.tag or "")
    messages[0] = explain(tag, messages[0])
    message = "; ".join(messages)
    return RouterFault(
        kind=FaultKind.RPC_ERROR,
        router_name=router,
        message=message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + "...",
        error_type=str(first.type or ""),
        error_tag=tag,
        error_severity=str(first.severity or ""),
        error_app_tag=str(first.app_tag or ""),
        error_path=str(first.path or "").strip(),
        raw=raw[:RAW_LIMIT],
        retryable=tag in RETRYABLE_TAGS or any(COMMIT_PENDING in t for t in texts),
    )


class NetconfSession:
    """One router's session; every call is serialised by an internal lock.

    ``max_reply_bytes`` caps every message from the router (default: the
    ``IDC_PROVISIONING_MAX_REPLY_BYTES`` setting)."""

    def __init__(
        self,
        device: Device,
        *,
        timeout_s: float = 30.0,
        max_reply_bytes: int | None = None,
        connect_timeout_s: float | None = None,
    ) -> None:
        self.device = device
        self._timeout_s = timeout_s
        # Opening a session (SSH handshake, the router's <hello>) may take longer than an
        # RPC on a busy machine (seen: over 3 s); it changes nothing on the router, so it
        # is given at least CONNECT_TIMEOUT_S unless told otherwise.
        self._connect_timeout_s = (
            connect_timeout_s if connect_timeout_s is not None
            else max(timeout_s, CONNECT_TIMEOUT_S)
        )
        self._max_reply_bytes = (
            max_reply_bytes if max_reply_bytes is not None else max_reply_bytes_setting()
        )
        self._manager: Manager | None = None
        self._lock = threading.RLock()
        self._holds_lock = False
        self.capabilities: list[str] = []

    @property
    def holds_lock(self) -> bool:
        """Whether this session holds the candidate lock: taken by it, not released, and
        its SSH session not closed or dropped since (a new one holds no lock)."""
        return self._holds_lock and self._manager is not None and self._manager.connected

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> Manager:
        try:
            m = self._open()
        except BaseException:
            REACHABILITY.opened(self.device.name, ok=False)
            raise
        REACHABILITY.opened(self.device.name, ok=True)
        # rpc-errors are classified here (_checked), by severity.
        m.raise_mode = RaiseMode.NONE
        self.capabilities = sorted(m.server_capabilities)
        return m

    def _open(self) -> Manager:
        try:
            return open_session(
                host=self.device.host,
                port=self.device.port,
                username=self.device.username,
                key_path=self.device.key_path,
                known_hosts_path=self.device.known_hosts_path,
                timeout_s=self._timeout_s,
                max_reply_bytes=self._max_reply_bytes,
                connect_timeout_s=self._connect_timeout_s,
            )
        except ValueError as exc:
            raise RouterFailure(self._fault(FaultKind.INTERNAL, str(exc))) from exc

    def _fault(self, kind: FaultKind, message: str, *, retryable: bool = False) -> RouterFault:
        return RouterFault(kind, self.device.name, message, retryable=retryable)

    def close(self) -> None:
        with self._lock:
            m, self._manager, self._holds_lock = self._manager, None, False
            if m is not None:
                with contextlib.suppress(Exception):
                    m.close_session()

    def _drop(self) -> None:
        m, self._manager, self._holds_lock = self._manager, None, False
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
                    lost_lock = self._holds_lock
                    self._drop()
                    if lost_lock:
                        # Never carried over silently: a new session holds no lock.
                        raise RouterFailure(
                            self._fault(
                                FaultKind.TRANSPORT,
                                f"{what}: not sent: the session holding the candidate lock "
                                "was lost",
                                retryable=True,
                            )
                        )
                    self._manager = self._connect()
                return self._checked(operation(self._manager))
            except (ReplyRefused, UnicodeError) as exc:
                # Refused unread: the session is closed; what the router did is unknown.
                self._drop()
                why = str(exc) if isinstance(exc, ReplyRefused) else f"reply refused: {exc}"
                if isinstance(exc, ReplyTooLarge):
                    why += f" ({MAX_REPLY_BYTES_SETTING})"
                raise RouterFailure(
                    self._fault(FaultKind.TRANSPORT, f"{what}: {why}", retryable=True)
                ) from exc
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

    def _checked(self, result: T) -> T:
        """A reply with an rpc-error that is not a warning raises; warnings are logged."""
        if not isinstance(result, RPCReply) or not result.errors:
            return result
        errors = result.errors
        if not all(is_warning(e) for e in errors):
            raise RouterFailure(fault_from_rpc_errors(self.device.name, errors, result.xml))
        span = trace.get_current_span()
        for warning in errors:
            text = str(warning.message or warning.tag or "").strip()
            log.warning("%s: the router warned: %s", self.device.name, text)
            span.add_event("netconf warning", {"idc.netconf.warning": text})
        return result

    # -- operations ---------------------------------------------------------------------

    def lock_candidate(self) -> None:
        self.call("lock", lambda m: m.lock(target="candidate"))
        self._holds_lock = True

    def unlock_candidate(self) -> None:
        try:
            self.call("unlock", lambda m: m.unlock(target="candidate"))
        finally:
            self._holds_lock = False

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
        reply = self.call(
            "get-config", lambda m: m.get_config(source="running", filter=source_filter)
        )
        data = reply.data_ele
        if data is None:
            # ncclient keeps no <data> from a reply with rpc-errors, warnings included.
            root = etree.fromstring(str(reply.xml).encode("utf-8"))
            data = root.find(qualify("data"))
        if data is None:
            raise RouterFailure(
                self._fault(FaultKind.TRANSPORT, "get-config: reply without <data>", retryable=True)
            )
        return str(to_xml(data))

    def probe(self) -> bool:
        """True when the router answers (opens the session if needed)."""
        try:
            self.call("hello", lambda m: m.connected)
        except RouterFailure:
            return False
        return True


def max_reply_bytes_setting() -> int:
    return max_reply_bytes(os.environ)


def read_running(device: Device) -> str:
    """One read of a router's running configuration on a session of its own (ops reads,
    recovery), so it never waits behind the agent's transaction."""
    session = NetconfSession(device, timeout_s=10)
    try:
        return session.running()
    finally:
        session.close()
