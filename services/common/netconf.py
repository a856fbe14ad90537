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
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ncclient import manager
from ncclient.operations import RPCError
from ncclient.operations.errors import TimeoutExpiredError
from ncclient.transport import session as nc_session

if TYPE_CHECKING:
    from ncclient.manager import Manager

# Long enough for an idle agent on a busy machine; a slower answer costs one more read.
FIRST_REPLY_S = 2.0
# A subtree filter in a namespace no agent serves selects nothing (RFC 6241 6.4.2).
SELECT_NOTHING = ("subtree", '<session-check xmlns="urn:idc:netconf:session-check"/>')


def open_session(
    *,
    host: str,
    port: int,
    username: str,
    key_path: Path,
    known_hosts_path: Path,
    timeout_s: float,
) -> Manager:
    """A connected session whose first exchange is done; ``timeout_s`` bounds the SSH
    connect and every RPC. Raises ValueError for a known_hosts path ncclient cannot use,
    ncclient's errors otherwise (``SSHUnknownHostError`` for an unknown or changed key)."""
    known = known_hosts_path.resolve()
    if any(c.isspace() for c in str(known)):
        raise ValueError(f"known_hosts path must not contain whitespace: {known}")
    nc_session.TICK = 0.001
    fd, config_path = tempfile.mkstemp(prefix="idc-ncclient-", suffix=".ssh_config")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"Host *\n    UserKnownHostsFile {known}\n")
        session = manager.connect(
            host=host,
            port=port,
            username=username,
            key_filename=str(key_path),
            hostkey_verify=True,
            ssh_config=config_path,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout_s,
        )
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
