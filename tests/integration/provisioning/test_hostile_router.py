"""NetconfSession against a hostile NETCONF server over real SSH (hostile_server.py): the
replies the devstack's netconfd never sends. Each is refused or classified at once (well
inside the RPC timeout), the session closed where the reply was refused, and the next call
is answered on a new session.

A refused reply is a TRANSPORT fault: the router may have done the step, so the agent
settles it by reading the router (router.outcome_unknown), never by assuming.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.provisioning.domain.faults import FaultKind, RouterFailure, RouterFault
from services.provisioning.netconf import (
    MAX_REPLY_BYTES_SETTING,
    MESSAGE_LIMIT,
    RAW_LIMIT,
    NetconfSession,
)
from services.provisioning.router import outcome_unknown
from tests.integration.provisioning.hostile_server import (
    HELLO_BODY,
    NC,
    HostileRouter,
    raw,
    reply_body,
    rpc_error,
)

pytestmark = pytest.mark.integration

RPC_TIMEOUT_S = 10.0
# Refusals come as the reply arrives; well under the timeout even on a loaded machine.
PROMPT_S = RPC_TIMEOUT_S / 2
CAP = 64 * 1024
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE rpc-reply [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + f']><rpc-reply xmlns="{NC}" message-id="{{mid}}"><data>&lol9;</data></rpc-reply>'
)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRouter]:
    server = HostileRouter(Path(tmp_path_factory.mktemp("hostile")))
    yield server
    server.close()


@pytest.fixture
def session(hostile: HostileRouter) -> Iterator[NetconfSession]:
    hostile.reset()
    client = NetconfSession(hostile.device(), timeout_s=RPC_TIMEOUT_S, max_reply_bytes=CAP)
    client.running()  # the session is open before anything is scripted
    yield client
    client.close()


def refused(step: Callable[[], object]) -> tuple[RouterFault, float]:
    started = time.monotonic()
    with pytest.raises(RouterFailure) as failure:
        step()
    return failure.value.fault, time.monotonic() - started


def assert_refused_unread(fault: RouterFault, elapsed: float, why: str) -> None:
    assert fault.kind is FaultKind.TRANSPORT, fault
    assert why in fault.message, fault.message
    assert outcome_unknown(fault)
    assert elapsed < PROMPT_S, f"refused after {elapsed:.1f} s, not as the reply came"


def assert_next_call_answered(hostile: HostileRouter, session: NetconfSession) -> None:
    """The refused session was closed; the next call opens a new one and is answered."""
    hellos = hostile.received.count("get-config")
    assert session.running() is not None
    assert hostile.received.count("get-config") >= hellos + 2  # a new first exchange too


def data_of(size: int) -> str:
    return f'<data><blob xmlns="urn:test:blob">{"x" * size}</blob></data>'


# -- size -----------------------------------------------------------------------------------


def test_a_reply_within_the_cap_is_read(hostile: HostileRouter, session: NetconfSession) -> None:
    hostile.answer("get-config", reply_body(data_of(CAP // 2)))
    assert "x" * (CAP // 2) in session.running()


def test_a_reply_larger_than_the_cap_is_refused(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer("get-config", reply_body(data_of(16 * CAP)))
    fault, elapsed = refused(session.running)
    assert_refused_unread(fault, elapsed, f"larger than the cap of {CAP} bytes")
    assert MAX_REPLY_BYTES_SETTING in fault.message
    assert_next_call_answered(hostile, session)


def test_a_reply_that_never_ends_is_refused_once_past_the_cap(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    def endless(mid: str) -> Iterator[bytes]:
        yield f'<rpc-reply xmlns="{NC}" message-id="{mid}"><data>'.encode()
        while True:
            yield b"<x>" + b"y" * 4096 + b"</x>"

    hostile.answer("commit", endless)
    session.lock_candidate()
    fault, elapsed = refused(session.commit)
    assert_refused_unread(fault, elapsed, f"larger than the cap of {CAP} bytes")
    assert not session.holds_lock  # the lock went with the closed session
    assert_next_call_answered(hostile, session)


# -- DTD and entities ------------------------------------------------------------------------


def test_a_reply_with_entity_declarations_is_refused_unexpanded(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer("get-config", raw(LAUGHS))
    fault, elapsed = refused(session.running)
    assert_refused_unread(fault, elapsed, "it has a DTD (<!DOCTYPE>); entities are never expanded")
    assert_next_call_answered(hostile, session)


def test_an_entity_that_would_read_as_ok_is_refused(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer(
        "commit",
        raw(
            '<?xml version="1.0"?><!-- looks fine --><!DOCTYPE rpc-reply '
            '[<!ENTITY answer "<ok/>">]>'
            f'<rpc-reply xmlns="{NC}" message-id="{{mid}}">&answer;</rpc-reply>'
        ),
    )
    fault, elapsed = refused(session.commit)
    assert_refused_unread(fault, elapsed, "it has a DTD")


def test_a_hello_with_a_dtd_is_refused(hostile: HostileRouter) -> None:
    hostile.reset()
    hostile.hellos.append(
        raw('<?xml version="1.0"?><!DOCTYPE hello [<!ENTITY e "x">]>' + HELLO_BODY)
    )
    client = NetconfSession(hostile.device(), timeout_s=RPC_TIMEOUT_S, max_reply_bytes=CAP)
    try:
        fault, elapsed = refused(client.lock_candidate)
        assert_refused_unread(fault, elapsed, "it has a DTD")
        assert "lock" not in hostile.received  # nothing was sent on that session
    finally:
        client.close()


def test_a_doctype_named_inside_the_data_is_not_a_dtd(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer(
        "get-config",
        reply_body(
            '<data><d xmlns="urn:test:d">&lt;!DOCTYPE x&gt;<![CDATA[<!DOCTYPE y>]]></d></data>'
        ),
    )
    assert "DOCTYPE" in session.running()


# -- not XML ---------------------------------------------------------------------------------


def test_a_reply_that_is_not_xml_is_refused_at_once(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer("lock", raw("% Invalid input detected at '^' marker."))
    fault, elapsed = refused(session.lock_candidate)
    assert_refused_unread(fault, elapsed, "not well-formed XML")
    assert not session.holds_lock
    assert_next_call_answered(hostile, session)


def test_a_reply_that_is_not_utf8_is_refused_at_once(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer("edit-config", lambda mid: [b"<rpc-reply>\xff\xfe</rpc-reply>"])
    fault, elapsed = refused(lambda: session.edit_candidate(f'<config xmlns="{NC}"/>'))
    assert_refused_unread(fault, elapsed, "reply refused")


# -- warnings and errors ---------------------------------------------------------------------


def test_a_warning_then_an_error_fails_as_the_error(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer(
        "lock",
        reply_body(
            rpc_error("operation-failed", "datastore is large", severity="warning")
            + rpc_error("lock-denied", "lock denied", info="<session-id>42</session-id>")
        ),
    )
    fault, _ = refused(session.lock_candidate)
    assert fault.kind is FaultKind.RPC_ERROR
    assert (fault.error_tag, fault.error_severity) == ("lock-denied", "error")
    assert fault.message == (
        "candidate locked by another session: lock denied; warning: datastore is large"
    )
    assert fault.retryable
    assert "<session-id>42</session-id>" in fault.raw  # who holds it, for the operator
    assert not session.holds_lock


def test_an_error_of_unknown_severity_fails(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer("commit", reply_body(rpc_error("operation-failed", "commit failed", "fatal")))
    fault, _ = refused(session.commit)
    assert (fault.kind, fault.error_tag) == (FaultKind.RPC_ERROR, "operation-failed")
    assert not fault.retryable


def test_warnings_alone_are_a_success(hostile: HostileRouter, session: NetconfSession) -> None:
    warning = rpc_error("operation-failed", "commit took long", severity="warning")
    hostile.answer("commit", reply_body(warning))
    session.commit()
    hostile.answer("get-config", reply_body(warning + data_of(10)))
    assert "x" * 10 in session.running()


def test_an_error_of_any_length_is_kept_short(
    hostile: HostileRouter, session: NetconfSession
) -> None:
    hostile.answer("commit", reply_body(rpc_error("operation-failed", "z" * (CAP // 2))))
    fault, _ = refused(session.commit)
    assert fault.message.startswith("zzz") and len(fault.message) <= MESSAGE_LIMIT + 3
    assert fault.raw.startswith("<rpc-reply") and len(fault.raw) <= RAW_LIMIT
