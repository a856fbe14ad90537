"""POSTing one delivery over HTTPS with a bounded timeout; no redirects are followed."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    # 0 when no HTTP response came.
    status_code: int
    error: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


class Poster(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response: ...


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trust store, or only ``ca_file`` when it is set."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


class HttpsPoster:
    def __init__(self, context: ssl.SSLContext, timeout_s: float) -> None:
        self._context = context
        self._timeout_s = timeout_s

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return Response(0, f"not an https URL: {url}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = http.client.HTTPSConnection(parts.hostname, parts.port,
                                                 timeout=self._timeout_s,
                                                 context=self._context)
        try:
            connection.request("POST", path, body=body, headers={
                "Content-Type": "application/json", "User-Agent": "idc-webhooks/1", **headers})
            reply = connection.getresponse()
            reply.read(4096)
            error = "" if 200 <= reply.status < 300 else f"HTTP {reply.status} {reply.reason}"
            return Response(reply.status, error)
        except (OSError, http.client.HTTPException) as exc:
            return Response(0, f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()
