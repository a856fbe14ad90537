"""Keyset pages: an opaque ``after`` cursor naming the last row of the page before (its
creation time and id), and the RFC 8288 ``Link: <...>; rel="next"`` header to the next."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from services.common.errors import InvalidArgument
from services.order.store import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Keyset

CURSOR_PREFIX = "k1:"


@dataclass(frozen=True)
class PageAsk:
    limit: int
    after: Keyset | None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    text = f"{CURSOR_PREFIX}{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Keyset:
    refused = InvalidArgument.for_field("after", "is not a cursor from a previous page's Link")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, row_id = text.removeprefix(CURSOR_PREFIX).partition("|")
        created_at = datetime.fromisoformat(moment)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise refused from None
    if not text.startswith(CURSOR_PREFIX) or not row_id or created_at.tzinfo is None:
        raise refused
    return created_at, row_id


def page_ask(limit: str | None, after: str | None) -> PageAsk:
    size = DEFAULT_PAGE_SIZE
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_SIZE:
            raise InvalidArgument.for_field("limit", f"must be 1 to {MAX_PAGE_SIZE}")
        size = int(limit)
    return PageAsk(size, decode_cursor(after) if after else None)


def next_link(path: str, query: dict[str, str], limit: int, cursor: str) -> str:
    """The Link header value to the page after the one whose last row ``cursor`` names."""
    params = {**{k: v for k, v in query.items() if k not in {"after", "limit"}},
              "limit": str(limit), "after": cursor}
    return f'<{path}?{urlencode(params)}>; rel="next"'
