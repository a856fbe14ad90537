"""A small NETCONF server over real SSH (paramiko) that answers as a faulty or hostile
router might: what the devstack's netconfd never sends (a reply larger than any cap or that
never ends, a DTD with entity declarations, a message that is not XML, a warning before an
error). The client side is the product's own: NetconfSession over ncclient, host key
checked against a known_hosts file, public-key login.

Every RPC is answered ``<ok/>`` (a get-config: ``<data/>``) unless a reply was scripted for
its operation with :meth:`HostileRouter.answer` (one reply per call, first in first out);
the first exchange of every session (a get-config of services.common.netconf's
session-check filter) is always answered normally. Base 1.0 framing (``]]>]]>``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import paramiko
from lxml import etree

from devstack.process import free_port
from services.provisioning.inventory import Device

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
EOM = b"]]>]]>"
SESSION_CHECK = "urn:idc:netconf:session-check"
HELLO_BODY = (
    f'<hello xmlns="{NC}"><capabilities>'
    "<capability>urn:ietf:params:netconf:base:1.0</capability>"
    "<capability>urn:ietf:params:netconf:capability:candidate:1.0</capability>"
    "<capability>urn:ietf:params:netconf:capability:confirmed-commit:1.1</capability>"
    "</capabilities><session-id>7</session-id></hello>"
)
HELLO = '<?xml version="1.0" encoding="UTF-8"?>' + HELLO_BODY

#: A reply: given the request's message-id, the bytes to send (then the end-of-message
#: mark, unless the iterator never ends).
Reply = Callable[[str], Iterable[bytes]]


def reply_body(body: str) -> Reply:
    """An rpc-reply holding ``body``."""
    return lambda mid: [f'<rpc-reply xmlns="{NC}" message-id="{mid}">{body}</rpc-reply>'.encode()]


def raw(text: str) -> Reply:
    """Exactly ``text``, whatever the request."""
    return lambda mid: [text.replace("{mid}", mid).encode()]


def rpc_error(tag: str, message: str, severity: str = "error", info: str = "") -> str:
    return (
        f"<rpc-error><error-type>protocol</error-type><error-tag>{tag}</error-tag>"
        f"<error-severity>{severity}</error-severity>"
        f'<error-message xml:lang="en">{message}</error-message>'
        + (f"<error-info>{info}</error-info>" if info else "")
        + "</rpc-error>"
    )


class _Login(paramiko.ServerInterface):
    def __init__(self, router: HostileRouter) -> None:
        self.router = router

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = key.get_base64() == self.router.client_key.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED_OR_DENIED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "netconf":
            return False
        threading.Thread(target=self.router._serve, args=(channel,), daemon=True).start()
        return True


class HostileRouter:
    """The server on a free loopback port, with its host key in ``known_hosts``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.host_key = paramiko.ECDSAKey.generate()
        self.client_key = paramiko.ECDSAKey.generate()
        self.key_path = workdir / "client_key"
        self.client_key.write_private_key_file(str(self.key_path))
        self.known_hosts_path = workdir / "known_hosts"
        self.known_hosts_path.write_text(
            f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"
        )
        self.hellos: deque[Reply] = deque()
        self._replies: defaultdict[str, deque[Reply]] = defaultdict(deque)
        self.received: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._transports: list[paramiko.Transport] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def device(self, name: str = "hostile-1") -> Device:
        return Device(
            name=name,
            telco="sg",
            site="sg-site-1",
            vendor="openconfig",
            platform="openconfig",
            host="127.0.0.1",
            port=self.port,
            username="idc",
            key_path=self.key_path,
            known_hosts_path=self.known_hosts_path,
        )

    def answer(self, operation: str, reply: Reply) -> None:
        """The next call of ``operation`` (``lock``, ``commit``, ``get-config``...) gets
        ``reply``."""
        self._replies[operation].append(reply)

    def reset(self) -> None:
        self.hellos.clear()
        self._replies.clear()
        self.received.clear()

    def close(self) -> None:
        self._listener.close()
        for transport in self._transports:
            transport.close()

    # -- serving --------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            transport.start_server(server=_Login(self))

    def _serve(self, channel: paramiko.Channel) -> None:
        # The client may close the session at any point (that is what a refusal does).
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            try:
                self._converse(channel)
            finally:
                channel.close()

    def _converse(self, channel: paramiko.Channel) -> None:
        hello = self.hellos.popleft() if self.hellos else raw(HELLO)
        if not self._send(channel, hello("")):
            return
        messages = _messages(channel)
        next(messages)  # the client's <hello>
        for message in messages:
            request = etree.fromstring(message)
            mid = request.get("message-id", "")
            operation = etree.QName(request[0]).localname
            self.received.append(operation)
            first_exchange = SESSION_CHECK in message.decode()
            queued = self._replies[operation]
            if queued and not first_exchange:
                reply = queued.popleft()
            else:
                reply = reply_body("<data/>" if operation == "get-config" else "<ok/>")
            if not self._send(channel, reply(mid)):
                return

    @staticmethod
    def _send(channel: paramiko.Channel, chunks: Iterable[bytes]) -> bool:
        """Send a reply and its end mark; False once the client closed the channel."""
        for chunk in chunks:
            if channel.closed:
                return False
            channel.sendall(chunk)
        channel.sendall(EOM)
        return True


def _messages(channel: paramiko.Channel) -> Iterator[bytes]:
    buffer = b""
    while True:
        while EOM not in buffer:
            data = channel.recv(65536)
            if not data:
                return
            buffer += data
        message, buffer = buffer.split(EOM, 1)
        yield message.strip()
