"""Offset paging of billing's list rpcs: one reading of page_size and page_token."""

from __future__ import annotations

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_window(page_size: int, page_token: str) -> tuple[int, int]:
    """(offset, size) of the page asked for; INVALID_ARGUMENT naming the field otherwise."""
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    try:
        offset = int(page_token or "0")
    except ValueError:
        raise InvalidArgument.for_field("page_token", "is not a token from this API") from None
    return offset, min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
