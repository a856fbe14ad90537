"""Browser sessions of the console, kept in this process's memory.

The cookie carries only a random session id; the ops token the person signed in with stays
on the server. Every session, signed in or not, has its own CSRF token, which every form
must send back. Signing in replaces the session id and the CSRF token (no fixation).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE_NAME = "idc_console_session"


@dataclass
class WebSession:
    id: str
    csrf: str
    last_seen: float
    token: str = ""
    telco: str = ""
    flashes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        return bool(self.token)

    def flash(self, kind: str, text: str) -> None:
        """A message for the next page shown (kind: ok, error, info)."""
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken


class SessionStore:
    def __init__(self, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle_s = idle_s
        self._clock = clock
        self._sessions: dict[str, WebSession] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> WebSession | None:
        """The live session with this id, or None (unknown or idle too long)."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self._idle_s:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            return session

    def new(self) -> WebSession:
        session = WebSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock())
        with self._lock:
            self._drop_idle()
            self._sessions[session.id] = session
        return session

    def sign_in(self, old: WebSession, token: str, telco: str) -> WebSession:
        """A fresh session (new id, new CSRF token) holding ``token``; ``old`` ends."""
        self.drop(old.id)
        session = self.new()
        session.token, session.telco = token, telco
        return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _drop_idle(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > self._idle_s]:
            del self._sessions[key]


def csrf_ok(session: WebSession, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, submitted or "")
