"""An in-memory edge router for unit tests of the provisioning agent.

:class:`FakeRouter` holds one router's datastores (running, candidate), the candidate
lock and at most one pending confirmed commit. :meth:`FakeRouter.session` opens a
:class:`FakeSession`, which implements :class:`~services.provisioning.router.RouterSession`
the way :class:`~services.provisioning.netconf.NetconfSession` does: a session that timed
out or dropped is gone, and the next call opens a new one (a new session id, without the
old one's lock).

It answers as the devstack's yuma123 netconfd was measured to answer; the same scenarios
run against both in tests/integration/provisioning/test_fake_router_fidelity.py:

* A confirmed commit (always with persist: the port has no other) survives the end of its
  session; any session confirms, extends or cancels it by persist id. A new confirmed
  commit while one is pending is refused, whatever its persist id.
* It is reverted at its timeout, whoever holds the lock and whether or not a session is
  open. netconfd checks the timeout only after a second without input on any session and
  on a clock of whole seconds: a router read more often than once a second never reverts,
  and a revert may come up to a second early (see :class:`PendingCommit`).
* A revert, a cancel, an unlock and the end of the lock holder's session reset the
  candidate to running; the lock holder keeps its lock over a revert.
* While a commit is pending, a lock is refused to every session, the committing one too; a
  plain commit from the session that made the pending commit confirms it, from any other
  it is refused. An edit or a discard-changes without the lock is accepted.
* A confirming or follow-up commit also commits whatever the candidate holds, whoever put
  it there. A candidate edited without the lock cannot be locked until discard-changes.
* A session holding the lock is the only one that can edit, discard or commit (a
  confirming commit too); a cancel-commit is not stopped by another session's lock.
* An edit is all or nothing: create of an existing sub-interface is data-exists, delete of
  an absent one data-missing, remove of an absent one succeeds, replace replaces, merge
  (no operation) merges; a VLAN outside 1..4094 is refused.
* An interface stays once edited in. One the datastore lacks is refused ("required value
  instance not found") to an edit that removes a sub-interface from it and, on openconfig,
  to one without the interface's config (its mandatory type): the modify and delete
  templates there, the delete template on cq-vendor.

The datastores hold interfaces by name and their sub-interfaces by VLAN: what the payloads
of netconf_templates/ edit and domain.observe reads back. The rest of an edit (a port's
own config) is accepted and not kept; an interface-level nc:operation is not modelled
(ValueError). get-config understands the filters of ``observe.running_filter``.

Faults: :meth:`FakeRouter.fail_next` makes the next call of a :class:`Step` time out or
drop (before or after the router applied it) or answer an rpc-error. Time: pass a
:class:`FakeClock` and :meth:`FakeClock.advance` it instead of sleeping.
"""

from __future__ import annotations

import copy
import enum
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import NoReturn, TypeVar
from xml.etree import ElementTree as ET

from services.provisioning.domain.faults import FaultKind, RouterFailure, RouterFault
from services.provisioning.domain.observe import (
    CQ_IFM,
    OC_IF,
    OC_VLAN,
    Leaves,
    SubinterfaceKey,
    running_subinterfaces,
)
from services.provisioning.netconf import RETRYABLE_TAGS, explain

T = TypeVar("T")
# interface name -> VLAN -> the sub-interface as edited in (never changed in place)
Store = dict[str, dict[int, ET.Element]]

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
OPERATION = f"{{{NC}}}operation"
# netconfd checks a confirmed commit's timeout only when select() waited this long in vain.
IDLE_CHECK_S = 1.0
IN_USE_COMMIT = "cannot perform the operation with confirmed-commit pending"


class Step(enum.Enum):
    """A call a session makes (CONNECT: the session being opened); the value is the
    operation NetconfSession names in its messages."""

    CONNECT = "connect"
    LOCK = "lock"
    UNLOCK = "unlock"
    EDIT = "edit-config"
    DISCARD = "discard-changes"
    COMMIT = "commit"
    CONFIRMED_COMMIT = "confirmed-commit"
    CONFIRMED_COMMIT_MORE = "confirmed-commit (follow-up)"
    CONFIRM = "confirming-commit"
    CANCEL = "cancel-commit"
    GET_CONFIG = "get-config"

    @property
    def operation(self) -> str:
        return self.value.split(" ")[0]


class Fault(enum.Enum):
    """How an injected fault ends a call."""

    TIMEOUT_BEFORE = "no answer; the router never applied the step"
    TIMEOUT_AFTER = "the router applied the step; its answer was lost"
    DROP_BEFORE = "the session dropped before the step reached the router"
    DROP_AFTER = "the router applied the step; the session dropped before the answer"
    RPC_ERROR = "the router answered an rpc-error; nothing applied"

    @property
    def applied(self) -> bool:
        return self in (Fault.TIMEOUT_AFTER, Fault.DROP_AFTER)


@dataclass(frozen=True)
class _Injected:
    fault: Fault
    tag: str
    message: str


class FakeClock:
    """Seconds that pass only when told: call it for the time, :meth:`advance` it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class PendingCommit:
    """The pending confirmed commit: what running reverts to and when."""

    persist_id: str
    started_at: float
    timeout_s: int
    backup: Store
    owner: int | None  # the session that made it (None once that session ended)

    def expired(self, now: float) -> bool:
        # netconfd compares whole seconds of time(): the revert may come up to 1 s early.
        return math.floor(now) - math.floor(self.started_at) >= self.timeout_s


@dataclass(frozen=True)
class Call:
    """One call the router saw (``session`` None: a connect that failed)."""

    session: int | None
    step: Step
    persist_id: str
    applied: bool
    error: str = ""


@dataclass(frozen=True)
class _Shape:
    """Where one platform keeps its sub-interfaces, and how it refuses a bad VLAN."""

    namespace: str
    top: tuple[str, ...]
    listed: str
    entry: str
    key: str
    vlan_id: str
    vlan_refusal: tuple[str, str, str]  # tag, app tag, message
    key_in_vlan_range: bool
    new_interface_needs_config: bool

    def ns(self, *names: str) -> str:
        return "/".join(f"{{{self.namespace}}}{name}" for name in names)

    def interfaces(self, root: ET.Element) -> Iterator[tuple[str, ET.Element, list[ET.Element]]]:
        """Each interface an edit or filter names: its name, element and entries."""
        for interface in root.iterfind(self.ns(*self.top, "interface")):
            name = (interface.findtext(self.ns("name")) or "").strip()
            yield name, interface, interface.findall(self.ns(self.listed, self.entry))


_SHAPES = {
    "openconfig": _Shape(
        namespace=OC_IF,
        top=("interfaces",),
        listed="subinterfaces",
        entry="subinterface",
        key="index",
        vlan_id=f"{{{OC_VLAN}}}vlan/{{{OC_VLAN}}}config/{{{OC_VLAN}}}vlan-id",
        vlan_refusal=("unknown-element", "data-invalid", "wrong node type"),
        key_in_vlan_range=False,
        new_interface_needs_config=True,
    ),
    "cq-vendor": _Shape(
        namespace=CQ_IFM,
        top=("ifm", "interfaces"),
        listed="sub-interfaces",
        entry="sub-interface",
        key="number",
        vlan_id=f"{{{CQ_IFM}}}dot1q/{{{CQ_IFM}}}vlan-id",
        vlan_refusal=("invalid-value", "not-in-range", "value not in range"),
        key_in_vlan_range=True,
        new_interface_needs_config=False,
    ),
}


class FakeRouter:
    """One router's datastores, lock and pending confirmed commit, shared by its sessions.

    ``clock`` (default: a new :class:`FakeClock`, kept as ``self.clock``) gives the time
    in seconds; ``idle_check_s`` is how long the router must see no input before it
    checks a pending commit's timeout (0 turns that off). Every call is in ``calls``.
    """

    def __init__(
        self,
        platform: str = "openconfig",
        *,
        name: str = "",
        clock: Callable[[], float] | None = None,
        idle_check_s: float = IDLE_CHECK_S,
    ) -> None:
        if platform not in _SHAPES:
            raise ValueError(f"platform must be one of {sorted(_SHAPES)}, not {platform!r}")
        self.platform = platform
        self.name = name or f"fake-{platform}"
        self.clock = clock or FakeClock()
        self.idle_check_s = idle_check_s
        self.calls: list[Call] = []
        self._shape = _SHAPES[platform]
        self._running: Store = {}
        self._candidate: Store = {}
        self._dirty = False
        self._lock_owner: int | None = None
        self._pending: PendingCommit | None = None
        self._live: set[int] = set()
        self._ids = itertools.count(1)
        self._faults: dict[Step, deque[_Injected]] = {}
        self._last_input = self.clock()
        self._mutex = threading.RLock()

    # -- what a test does -------------------------------------------------------------

    def session(self) -> FakeSession:
        """A new client session (opened on its first call, like NetconfSession)."""
        return FakeSession(self)

    def fail_next(
        self, step: Step, fault: Fault, *, tag: str = "operation-failed", message: str = ""
    ) -> None:
        """Make the next call of ``step``, from any session, fail as ``fault`` says
        (queued: several calls fail the next several). ``tag`` and ``message`` are the
        rpc-error's, for RPC_ERROR."""
        if step is Step.CONNECT and fault is Fault.RPC_ERROR:
            raise ValueError("a connect fails by timing out or dropping, not by an rpc-error")
        injected = _Injected(fault, tag, message or tag.replace("-", " "))
        with self._mutex:
            self._faults.setdefault(step, deque()).append(injected)

    def unused_faults(self) -> list[tuple[Step, Fault]]:
        """Faults injected and not yet met."""
        with self._mutex:
            return [(step, i.fault) for step, queue in self._faults.items() for i in queue]

    def kill_sessions(self) -> None:
        """End every session at the router's end (as a restart of sshd would); each
        FakeSession opens a new one on its next call."""
        with self._mutex:
            for sid in sorted(self._live):
                self._end(sid)

    def seed(self, *configs: str) -> None:
        """Put edit-config ``<config>`` documents straight into running (setup)."""
        with self._mutex:
            store = self._running
            for config in configs:
                store = self._edited(store, config)
            self._running = store
            self._reset_candidate()

    # -- what a test inspects (not calls: they do not keep the router busy) -----------

    def running_xml(self) -> str:
        """The running configuration, as a get-config would answer it."""
        with self._mutex:
            self._settle()
            return _data_xml(self._shape, self._running)

    def subinterfaces(self) -> dict[SubinterfaceKey, Leaves]:
        """Running's sub-interfaces, as ``observe.running_subinterfaces`` reads them."""
        return running_subinterfaces(self.platform, self.running_xml())

    @property
    def pending(self) -> PendingCommit | None:
        with self._mutex:
            self._settle()
            return self._pending

    @property
    def lock_owner(self) -> int | None:
        """The session id holding the candidate lock."""
        with self._mutex:
            return self._lock_owner

    @property
    def candidate_dirty(self) -> bool:
        """Whether the candidate holds edits not in running."""
        with self._mutex:
            self._settle()
            return self._dirty

    # -- calls, with their faults -----------------------------------------------------

    def _call(
        self, session: FakeSession, step: Step, persist_id: str, apply: Callable[[int], T]
    ) -> T:
        with self._mutex:
            sid = self._connected(session)
            self._input()
            injected = self._take(step)
            if injected is not None and not injected.fault.applied:
                self._inject(session, step, persist_id, injected)
            try:
                result = apply(sid)
            except RouterFailure as exc:
                self.calls.append(Call(sid, step, persist_id, False, exc.fault.message))
                raise
            if injected is not None:
                self._inject(session, step, persist_id, injected)
            self.calls.append(Call(sid, step, persist_id, True))
            return result

    def _connected(self, session: FakeSession) -> int:
        if session.session_id in self._live:
            return session.session_id
        self._input()
        injected = self._take(Step.CONNECT)
        if injected is not None:
            self._inject(session, Step.CONNECT, "", injected)
        sid = next(self._ids)
        self._live.add(sid)
        session.session_id = sid
        self.calls.append(Call(sid, Step.CONNECT, "", True))
        return sid

    def _take(self, step: Step) -> _Injected | None:
        queue = self._faults.get(step)
        return queue.popleft() if queue else None

    def _inject(
        self, session: FakeSession, step: Step, persist_id: str, injected: _Injected
    ) -> NoReturn:
        sid = session.session_id if step is not Step.CONNECT else None
        if injected.fault is Fault.RPC_ERROR:
            fault = self._rpc_error(injected.tag, injected.message)
        else:
            # As NetconfSession does on no answer: drop the transport; the router sees
            # the session end.
            self._end(session.session_id)
            session.session_id = None
            timed_out = injected.fault in (Fault.TIMEOUT_BEFORE, Fault.TIMEOUT_AFTER)
            kind = FaultKind.TIMEOUT if timed_out else FaultKind.TRANSPORT
            text = f"{step.operation}: {'no answer' if timed_out else 'session dropped'}"
            fault = RouterFault(kind, self.name, f"{text} (injected)", retryable=True)
        applied = injected.fault.applied
        self.calls.append(Call(sid, step, persist_id, applied, fault.message))
        raise RouterFailure(fault)

    def _rpc_error(
        self, tag: str, message: str, app_tag: str = "", error_type: str = "protocol"
    ) -> RouterFault:
        return RouterFault(
            FaultKind.RPC_ERROR,
            self.name,
            explain(tag, message),  # as NetconfSession words it
            error_type=error_type,
            error_tag=tag,
            error_severity="error",
            error_app_tag=app_tag,
            retryable=tag in RETRYABLE_TAGS or "confirmed-commit pending" in message,
        )

    def _refuse(
        self, tag: str, message: str, app_tag: str, error_type: str = "protocol"
    ) -> NoReturn:
        raise RouterFailure(self._rpc_error(tag, message, app_tag, error_type))

    # -- time ---------------------------------------------------------------------------

    def _input(self) -> None:
        self._settle()
        self._last_input = self.clock()

    def _settle(self) -> None:
        """Revert the pending commit if netconfd would have by now: its timeout passed
        and, since the last input, the router idled long enough to check it."""
        now = self.clock()
        pending = self._pending
        if (
            pending is not None
            and pending.expired(now)
            and now - self._last_input >= self.idle_check_s
        ):
            self._revert(pending)

    # -- the router's datastores --------------------------------------------------------

    def _end(self, sid: int | None) -> None:
        if sid is None or sid not in self._live:
            return
        self._input()
        self._live.discard(sid)
        if self._lock_owner == sid:
            self._lock_owner = None
            self._reset_candidate()
        if self._pending is not None and self._pending.owner == sid:
            self._pending = replace(self._pending, owner=None)

    def _reset_candidate(self) -> None:
        self._candidate = self._running
        self._dirty = False

    def _commit_candidate(self) -> None:
        self._running = self._candidate
        self._dirty = False

    def _revert(self, pending: PendingCommit) -> None:
        self._running = pending.backup
        self._pending = None
        self._reset_candidate()

    def _writable(self, sid: int, error_type: str = "protocol") -> None:
        if self._lock_owner not in (None, sid):
            self._refuse("in-use", "config locked", "no-access", error_type)

    def _named(self, persist_id: str) -> PendingCommit:
        if self._pending is None:
            self._refuse(
                "operation-failed", "persistent confirmed commit not active", "general-error"
            )
        if self._pending.persist_id != persist_id:
            self._refuse("invalid-value", "invalid value", "data-invalid")
        return self._pending

    def _lock(self, sid: int) -> None:
        if self._lock_owner is not None:
            self._refuse("lock-denied", "lock denied", "no-access")
        if self._dirty:
            self._refuse(
                "resource-denied", "candidate cannot be locked, discard-changes needed", "no-access"
            )
        if self._pending is not None:
            self._refuse("in-use", IN_USE_COMMIT, "outstanding-confirmed-commit")
        self._lock_owner = sid

    def _unlock(self, sid: int) -> None:
        if self._lock_owner is None:
            self._refuse("operation-failed", "wrong config state", "no-access")
        self._writable(sid)
        self._lock_owner = None
        self._reset_candidate()

    def _edit(self, sid: int, config: str) -> None:
        self._writable(sid, "application")
        self._candidate = self._edited(self._candidate, config)
        self._dirty = True

    def _discard(self, sid: int) -> None:
        self._writable(sid)
        self._reset_candidate()

    def _commit(self, sid: int) -> None:
        self._writable(sid)
        if self._pending is not None:
            if self._pending.owner != sid:
                self._refuse("in-use", IN_USE_COMMIT, "outstanding-confirmed-commit")
            self._pending = None  # from the session that made it, a plain commit confirms
        self._commit_candidate()

    def _confirmed_commit(self, sid: int, persist_id: str, timeout_s: int) -> None:
        self._writable(sid)
        if self._pending is not None:
            self._refuse("operation-failed", "operation failed", "general-error")
        self._pending = PendingCommit(persist_id, self.clock(), timeout_s, self._running, sid)
        self._commit_candidate()

    def _confirmed_commit_more(self, sid: int, persist_id: str, timeout_s: int) -> None:
        pending = self._named(persist_id)
        self._writable(sid)
        # The backup stays: a revert still goes back to before the first commit.
        self._pending = replace(pending, started_at=self.clock(), timeout_s=timeout_s, owner=sid)
        self._commit_candidate()

    def _confirm(self, sid: int, persist_id: str) -> None:
        self._named(persist_id)
        self._writable(sid)
        self._pending = None
        self._commit_candidate()

    def _cancel(self, persist_id: str) -> None:
        if self._pending is None:
            self._refuse("operation-failed", "operation failed", "general-error")
        if self._pending.persist_id != persist_id:
            self._refuse("invalid-value", "invalid value", "data-invalid")
        self._revert(self._pending)

    def _get_config(self, subtree: str | None) -> str:
        store = self._running if subtree is None else _selected(self._shape, self._running, subtree)
        return _data_xml(self._shape, store)

    def _edited(self, store: Store, config: str) -> Store:
        """``store`` after the edit ``config``; all or nothing (a refusal raises)."""
        shape = self._shape
        try:
            root = ET.fromstring(config)
        except ET.ParseError as exc:
            raise ValueError(f"fake router: edit is not well-formed XML: {exc}") from exc
        edited = dict(store)
        for name, interface, entries in shape.interfaces(root):
            if interface.get(OPERATION) is not None:
                raise ValueError("fake router: nc:operation on an interface is not modelled")
            operations = [entry.get(OPERATION, "merge") for entry in entries]
            if name not in edited and (
                (shape.new_interface_needs_config and interface.find(shape.ns("config")) is None)
                or {"remove", "delete"} & set(operations)
            ):
                self._refuse(
                    "data-missing",
                    "required value instance not found",
                    "instance-required",
                    "application",
                )
            subs = edited[name] = dict(edited.get(name, {}))
            for entry, operation in zip(entries, operations, strict=True):
                self._edit_entry(subs, entry, operation)
        return edited

    def _edit_entry(self, subs: dict[int, ET.Element], entry: ET.Element, operation: str) -> None:
        shape = self._shape
        vlan = self._vlan(entry.findtext(shape.ns(shape.key)), shape.key_in_vlan_range)
        vlan_id = entry.find(shape.vlan_id)
        if vlan_id is not None:
            self._vlan(vlan_id.text, in_range=True)
        if operation == "create" and vlan in subs:
            self._refuse("data-exists", "data exists", "no-access", "application")
        if operation == "delete" and vlan not in subs:
            self._refuse("data-missing", "data missing", "data-incomplete", "application")
        if operation in ("create", "replace") or (operation == "merge" and vlan not in subs):
            subs[vlan] = _stored(entry)
        elif operation == "merge":
            subs[vlan] = _merged(subs[vlan], entry)
        elif operation in ("delete", "remove"):
            subs.pop(vlan, None)
        else:
            raise ValueError(f"fake router: nc:operation={operation!r} is not modelled")

    def _vlan(self, text: str | None, in_range: bool) -> int:
        value = (text or "").strip()
        if not value.isdigit() or (in_range and not 1 <= int(value) <= 4094):
            tag, app_tag, message = self._shape.vlan_refusal
            self._refuse(tag, message, app_tag)
        return int(value)


class FakeSession:
    """A client's session to a :class:`FakeRouter`; implements RouterSession.

    Opened on the first call, and again on the call after one that timed out or dropped
    or after :meth:`close` (``session_id`` changes; the old session's lock is gone).
    """

    def __init__(self, router: FakeRouter) -> None:
        self.router = router
        self.session_id: int | None = None

    @property
    def holds_lock(self) -> bool:
        return self.session_id is not None and self.router.lock_owner == self.session_id

    def lock_candidate(self) -> None:
        self.router._call(self, Step.LOCK, "", self.router._lock)

    def unlock_candidate(self) -> None:
        self.router._call(self, Step.UNLOCK, "", self.router._unlock)

    def edit_candidate(self, config: str) -> None:
        self.router._call(self, Step.EDIT, "", lambda sid: self.router._edit(sid, config))

    def discard(self) -> None:
        self.router._call(self, Step.DISCARD, "", self.router._discard)

    def commit(self) -> None:
        self.router._call(self, Step.COMMIT, "", self.router._commit)

    def confirmed_commit(self, persist_id: str, timeout_s: int) -> None:
        self.router._call(
            self,
            Step.CONFIRMED_COMMIT,
            persist_id,
            lambda sid: self.router._confirmed_commit(sid, persist_id, timeout_s),
        )

    def confirmed_commit_more(self, persist_id: str, timeout_s: int) -> None:
        self.router._call(
            self,
            Step.CONFIRMED_COMMIT_MORE,
            persist_id,
            lambda sid: self.router._confirmed_commit_more(sid, persist_id, timeout_s),
        )

    def confirm(self, persist_id: str) -> None:
        self.router._call(
            self, Step.CONFIRM, persist_id, lambda sid: self.router._confirm(sid, persist_id)
        )

    def cancel(self, persist_id: str) -> None:
        self.router._call(
            self, Step.CANCEL, persist_id, lambda sid: self.router._cancel(persist_id)
        )

    def running(self, subtree: str | None = None) -> str:
        return self.router._call(
            self, Step.GET_CONFIG, "", lambda sid: self.router._get_config(subtree)
        )

    def close(self) -> None:
        """End the session (never raises, like NetconfSession.close)."""
        with self.router._mutex:
            self.router._end(self.session_id)
            self.session_id = None

    def drop(self) -> None:
        """The transport drops without a close-session: to the router, the same end."""
        self.close()


def _stored(entry: ET.Element) -> ET.Element:
    kept = copy.deepcopy(entry)
    kept.attrib.pop(OPERATION, None)
    return kept


def _merged(existing: ET.Element, edit: ET.Element) -> ET.Element:
    merged = copy.deepcopy(existing)

    def merge(into: ET.Element, source: ET.Element) -> None:
        for child in source:
            match = into.find(child.tag)
            if match is None:
                into.append(copy.deepcopy(child))
            elif len(child):
                merge(match, child)
            else:
                match.text = child.text

    merge(merged, edit)
    return merged


def _selected(shape: _Shape, store: Store, subtree: str) -> Store:
    """What a subtree filter of the ``observe.running_filter`` shape selects: the
    sub-interfaces it names, every one of an interface it names without listing any, all
    of them when it names no interface, none when it is about another model."""
    root = ET.fromstring(f"<filter>{subtree}</filter>")
    if root.find(shape.ns(shape.top[0])) is None:
        return {}
    named = list(shape.interfaces(root))
    if not named:
        return store
    selected: Store = {}
    for name, _, entries in named:
        if name in store:
            keys = {int(k) for e in entries if (k := e.findtext(shape.ns(shape.key)))}
            chosen = {v: e for v, e in store[name].items() if not entries or v in keys}
            selected[name] = {**selected.get(name, {}), **chosen}
    return selected


def _data_xml(shape: _Shape, store: Store) -> str:
    data = ET.Element(f"{{{NC}}}data")
    parent = data
    for name in shape.top:
        parent = ET.SubElement(parent, shape.ns(name))
    for name, subs in sorted(store.items()):
        interface = ET.SubElement(parent, shape.ns("interface"))
        ET.SubElement(interface, shape.ns("name")).text = name
        if subs:
            ET.SubElement(interface, shape.ns(shape.listed)).extend(
                entry for _, entry in sorted(subs.items())
            )
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(data, encoding="unicode")
