"""Opening a NETCONF session (ncclient over SSH) the one way every component does it.

- Host keys are verified against one known_hosts file. ncclient reads host keys only from
  ~/.ssh/known_hosts or from an ssh_config's UserKnownHostsFile, so it is given a
  temporary ssh_config that names only that file.
- ncclient's session thread sends queued requests only between select() wake-ups of
  ``TICK`` seconds (0.1 by default, about 100 ms added to every RPC): it is set to 1 ms.
- The first exchange is a read that selects nothing (:func:`settle_first_exchange`), so
  that no caller's first RPC is left unanswered by an agent that handles only the first
  message of a read (yuma123's netconfd does: an RPC that reaches it in the same read as
  the client's ``<hello>`` waits until more input arrives on that session).
- Every message from the router, its ``<hello>`` included, is checked before ncclient reads
  it (:class:`GuardedSSHSession`): one larger than the session's cap, one with a DTD (entity
  declarations are never expanded) or one that is not well-formed XML is refused with
  :class:`ReplyRefused`, which fails the RPC waiting for it at once and closes the session.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from lxml import etree
from ncclient.devices.default import DefaultDeviceHandler
from ncclient.manager import Manager
from ncclient.operations import RPCError
from ncclient.operations.errors import TimeoutExpiredError
from ncclient.transport import SSHSession
from ncclient.transport import session as nc_session
from ncclient.transport.errors import TransportError

# Long enough for an idle agent on a busy machine; a slower answer costs one more read.
FIRST_REPLY_S = 2.0
# A subtree filter in a namespace no agent serves selects nothing (RFC 6241 6.4.2).
SELECT_NOTHING = ("subtree", '<session-check xmlns="urn:idc:netconf:session-check"/>')
# Far above a router's running configuration at thousands of circuits (about 1 KiB each).
DEFAULT_MAX_REPLY_BYTES = 16 * 1024 * 1024
# What the check parses with: nothing fetched, nothing expanded.
_CHECK_PARSER = etree.XMLParser(
    resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False
)


class ReplyRefused(TransportError):  # type: ignore[misc]
    """A message from the router refused unread: over the size cap, with a DTD, or not
    XML. The session is closed with it; what the router did with the request is unknown."""


class ReplyTooLarge(ReplyRefused):
    """A message from the router grew past the session's cap."""


def _dtd_in_prolog(raw: str) -> bool:
    """Whether a DTD comes before the root element (after the XML declaration, comments
    and processing instructions: the only place one can be), found without parsing."""
    at = 0
    while True:
        while at < len(raw) and raw[at] in "\ufeff \t\r\n":
            at += 1
        for start, end in (("<?", "?>"), ("<!--", "-->")):
            if raw.startswith(start, at):
                closed = raw.find(end, at + len(start))
                if closed < 0:
                    return False  # not well-formed: the parse refuses it
                at = closed + len(end)
                break
        else:
            return raw.startswith("<!DOCTYPE", at)


def check_message(raw: str) -> None:
    """Raise :class:`ReplyRefused` unless ``raw`` is well-formed XML without a DTD (looked
    for before parsing, so nothing in one is ever read)."""
    has_dtd = _dtd_in_prolog(raw)
    if not has_dtd:
        try:
            root = etree.fromstring(raw.encode("utf-8"), _CHECK_PARSER)
        except (etree.XMLSyntaxError, ValueError) as exc:
            raise ReplyRefused(f"reply refused: not well-formed XML: {exc}") from exc
        has_dtd = bool(root.getroottree().docinfo.doctype)
    if has_dtd:
        raise ReplyRefused("reply refused: it has a DTD (<!DOCTYPE>); entities are never expanded")


class GuardedSSHSession(SSHSession):  # type: ignore[misc]
    """ncclient's SSH session with every incoming message checked. The size cap counts the
    bytes read since the previous message ended (framing included), so a reply is refused
    while it streams in, not once it is all in memory."""

    def __init__(self, device_handler: DefaultDeviceHandler, max_reply_bytes: int) -> None:
        super().__init__(device_handler)
        self.max_reply_bytes = max_reply_bytes
        self._unread_bytes = 0

    def _transport_read(self) -> bytes:
        data: bytes = super()._transport_read()
        self._unread_bytes += len(data)
        if self._unread_bytes > self.max_reply_bytes:
            raise ReplyTooLarge(
                f"reply refused: larger than the cap of {self.max_reply_bytes} bytes"
            )
        return data

    def _dispatch_message(self, raw: str) -> None:
        # Runs on the session's thread; raising here fails every waiting RPC with it.
        self._unread_bytes = 0
        check_message(raw)
        super()._dispatch_message(raw)


def open_session(
    *,
    host: str,
    port: int,
    username: str,
    key_path: Path,
    known_hosts_path: Path,
    timeout_s: float,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    connect_timeout_s: float | None = None,
) -> Manager:
    """A connected session whose first exchange is done; ``connect_timeout_s`` (default
    ``timeout_s``) bounds the SSH connect and the <hello>, ``timeout_s`` every RPC,
    ``max_reply_bytes`` every message from the router. Raises
    ValueError for a known_hosts path ncclient cannot use, ncclient's errors otherwise
    (``SSHUnknownHostError`` for an unknown or changed key, :class:`ReplyRefused`)."""
    known = known_hosts_path.resolve()
    if any(c.isspace() for c in str(known)):
        raise ValueError(f"known_hosts path must not contain whitespace: {known}")
    nc_session.TICK = 0.001
    fd, config_path = tempfile.mkstemp(prefix="idc-ncclient-", suffix=".ssh_config")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"Host *\n    UserKnownHostsFile {known}\n")
        # What ncclient's manager.connect does, with the guarded session in place of its
        # own, so that the router's <hello> is checked too.
        handler = DefaultDeviceHandler()
        transport = GuardedSSHSession(handler, max_reply_bytes)
        try:
            transport.connect(
                host=host,
                port=port,
                username=username,
                key_filename=str(key_path),
                hostkey_verify=True,
                ssh_config=config_path,
                look_for_keys=False,
                allow_agent=False,
                timeout=connect_timeout_s or timeout_s,
            )
        except BaseException:
            if transport.transport:
                transport.close()
            raise
        session = Manager(transport, handler, timeout=timeout_s)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(config_path)
    try:
        settle_first_exchange(session, timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            session._session.close()
        raise
    session.timeout = timeout_s
    return session


def settle_first_exchange(session: Manager, timeout_s: float) -> None:
    """Read nothing, and read again if the first read is not answered within
    :data:`FIRST_REPLY_S`: the second request is the input that makes such an agent handle
    the first, so both are answered. Raises ``TimeoutExpiredError`` when neither is
    answered within ``timeout_s``."""
    try:
        session.timeout = min(FIRST_REPLY_S, timeout_s)
        _read_nothing(session)
        return
    except TimeoutExpiredError:
        if timeout_s <= FIRST_REPLY_S:
            raise
    finally:
        session.timeout = timeout_s
    _read_nothing(session)


def _read_nothing(session: Manager) -> None:
    # An agent that refuses the unknown namespace has answered all the same.
    with contextlib.suppress(RPCError):
        session.get_config(source="running", filter=SELECT_NOTHING)
