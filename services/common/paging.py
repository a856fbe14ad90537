"""Keyset paging of the List rpcs: the page token carries the sort key of the last row
returned, and the next page starts after it.

With offsets, rows inserted or removed before the offset while a caller pages shift every
later page (a row is shown twice or never); a key does not move. The token is opaque to
callers: base64url of a versioned JSON list of the key's values.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

from services.common.errors import InvalidArgument

T = TypeVar("T")
KeyValue = str | int | datetime
Key = tuple[KeyValue, ...]

_VERSION = "k1"
_NOT_A_TOKEN = "is not a token from a previous response"


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: Key | None  # the sort key of the previous page's last row; None: the first page


def page_request(page_size: int, page_token: str, *, default: int, maximum: int
                 ) -> PageRequest:
    """A request's page_size (0: ``default``, at most ``maximum``) and page_token."""
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", "must be zero (the default) or more")
    return PageRequest(min(page_size or default, maximum),
                       decode_token(page_token) if page_token else None)


def encode_token(key: Key) -> str:
    values = [{"t": _utc(v).isoformat()} if isinstance(v, datetime) else v for v in key]
    return base64.urlsafe_b64encode(json.dumps([_VERSION, values]).encode()).decode()


def _utc(moment: datetime) -> datetime:
    """Times are stored in UTC; SQLite gives them back naive."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def decode_token(token: str) -> Key:
    try:
        version, values = json.loads(base64.urlsafe_b64decode(token.encode()))
        if version != _VERSION or not isinstance(values, list) or not values:
            raise ValueError(token)
        return tuple(_key_value(value) for value in values)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.for_field("page_token", _NOT_A_TOKEN) from None


def _key_value(value: Any) -> KeyValue:
    if isinstance(value, dict) and set(value) == {"t"}:
        moment = datetime.fromisoformat(value["t"])
        if moment.tzinfo is None:  # every time the services store is in UTC
            raise ValueError(value)
        return moment
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise ValueError(value)


def checked(key: Key, *kinds: type) -> tuple[Any, ...]:
    """``key`` if its values are of ``kinds`` (typed as the caller's kinds, which it just
    checked); a token of another list is refused."""
    if len(key) != len(kinds) or not all(
            isinstance(value, kind) for value, kind in zip(key, kinds, strict=True)):
        raise InvalidArgument.for_field("page_token", _NOT_A_TOKEN)
    return key


def _python_type(column: Any) -> type:
    sql_type = column.type
    return getattr(sql_type, "impl_instance", sql_type).python_type  # type: ignore[no-any-return]


def after(columns: Sequence[Any], key: Sequence[Any], *,
          descending: bool | Sequence[bool], check: bool = True) -> ColumnElement[bool]:
    """Rows that sort after ``key`` on ``columns``, each descending or not as the list is
    ordered (one bool for all), in the or-of-ands form every database plans with the sort
    index. ``key`` holds values (checked against the columns' types) or, with
    ``check=False``, bound parameters of a statement built once."""
    if check:
        checked(tuple(key), *(_python_type(column) for column in columns))
    directions = ([descending] * len(columns) if isinstance(descending, bool)
                  else list(descending))
    clauses = []
    for depth, (column, value, down) in enumerate(zip(columns, key, directions, strict=True)):
        beyond = column < value if down else column > value
        equal = [c == v for c, v in zip(columns[:depth], key[:depth], strict=True)]
        clauses.append(and_(*equal, beyond))
    return or_(*clauses)


def page_of(rows: Sequence[T], request: PageRequest, key_of: Callable[[T], Key]
            ) -> tuple[list[T], str]:
    """The first ``limit`` of ``rows`` (read with one extra to know if more follow) and
    the token of the next page, empty on the last."""
    shown = list(rows[:request.limit])
    more = len(rows) > request.limit
    return shown, encode_token(key_of(shown[-1])) if more and shown else ""
