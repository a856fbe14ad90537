"""Paging of billing's list rpcs: one reading of page_size and page_token."""

from __future__ import annotations

from services.common.paging import PageRequest, page_request

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_window(page_size: int, page_token: str) -> PageRequest:
    """The page asked for (a keyset token, services/common/paging.py); INVALID_ARGUMENT
    naming the field otherwise."""
    return page_request(page_size, page_token, default=DEFAULT_PAGE_SIZE,
                        maximum=MAX_PAGE_SIZE)
