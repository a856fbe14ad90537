"""Reading a JSON body field by field: a wrong type or a missing field is an
InvalidArgument naming the field's path, never a server error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.common.errors import InvalidArgument

# The widest the proto fields these land in take (int32, uint32, int64): larger or negative
# values are refused here rather than by protobuf as a server error.
MAX_INTEGER = 2**31 - 1


class Body:
    def __init__(self, value: Any, path: str = "") -> None:
        if not isinstance(value, dict):
            raise InvalidArgument.for_field(path or "body", "must be a JSON object")
        self._value: dict[str, Any] = value
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def _name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def has(self, key: str) -> bool:
        return self._value.get(key) is not None

    def text(self, key: str, *, required: bool = False) -> str:
        value = self._value.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value):
            raise InvalidArgument.for_field(self._name(key), "must be a non-empty string"
                                            if required else "must be a string")
        return value

    def integer(self, key: str) -> int | None:
        value = self._value.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument.for_field(self._name(key), "must be an integer")
        if not 0 <= value <= MAX_INTEGER:
            raise InvalidArgument.for_field(self._name(key), f"must be 0 to {MAX_INTEGER}")
        return value

    def instant(self, key: str) -> datetime | None:
        """An RFC 3339 date-time with its offset (``2026-12-05T09:00:00Z``)."""
        value = self._value.get(key)
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise InvalidArgument.for_field(self._name(key), "must be a date-time with its "
                                            "offset, e.g. 2026-12-05T09:00:00Z")
        return moment

    def child(self, key: str, *, required: bool = False) -> Body | None:
        value = self._value.get(key)
        if value is None:
            if required:
                raise InvalidArgument.for_field(self._name(key), "is required")
            return None
        return Body(value, self._name(key))

    def items(self, key: str, *, required: bool = False, max_items: int = 100) -> list[Body]:
        value = self._value.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list) or (required and not value):
            raise InvalidArgument.for_field(self._name(key), "must be a non-empty array"
                                            if required else "must be an array")
        if len(value) > max_items:
            raise InvalidArgument.for_field(self._name(key),
                                            f"takes at most {max_items} item(s)")
        return [Body(item, f"{self._name(key)}[{i}]") for i, item in enumerate(value)]
