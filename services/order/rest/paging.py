"""Keyset pages over REST: the ``after`` cursor is the gRPC lists' opaque page token
(services/common/paging.py: the sort key, creation time and id, of the page's last row),
and the RFC 8288 ``Link: <...>; rel="next"`` header leads to the next page."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from services.common.errors import InvalidArgument
from services.common.paging import PageRequest, checked, decode_token
from services.order.store import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE


def page_ask(limit: str | None, after: str | None) -> PageRequest:
    """The page a list call asks for; both lists page by (created_at, id)."""
    size = DEFAULT_PAGE_SIZE
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_SIZE:
            raise InvalidArgument.for_field("limit", f"must be 1 to {MAX_PAGE_SIZE}")
        size = int(limit)
    if not after:
        return PageRequest(size, None)
    try:
        return PageRequest(size, checked(decode_token(after), datetime, str))
    except InvalidArgument:
        raise InvalidArgument.for_field(
            "after", "is not a cursor from a previous page's Link") from None


def next_link(path: str, query: dict[str, str], limit: int, cursor: str) -> str:
    """The Link header value to the page after the one whose last row ``cursor`` names."""
    params = {**{k: v for k, v in query.items() if k not in {"after", "limit"}},
              "limit": str(limit), "after": cursor}
    return f'<{path}?{urlencode(params)}>; rel="next"'
