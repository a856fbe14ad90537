"""Domain errors: plain Python, raised by domain code and adapters alike.

The gRPC layer maps each class to one status code in ``grpc_server.status_for``; nothing
else in the project picks status codes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base class; ``message`` is shown to the caller, so it says what to do.

    ``reason`` overrides the stable ErrorInfo reason of the error's class (the table is in
    ``grpc_server``) where a caller needs to tell this case from the others of its class.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class InvalidArgument(DomainError):
    def __init__(self, message: str, violations: list[FieldViolation] | None = None,
                 *, reason: str = "") -> None:
        super().__init__(message, reason=reason)
        self.violations = list(violations or [])

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    pass


class CapacityExhausted(DomainError):
    """Not enough channel or port bandwidth left; the message says how much is."""


class PermissionDenied(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class Unavailable(DomainError):
    """A peer (database, broker, router) cannot be reached now; the caller may retry."""


class Throttled(DomainError):
    """The caller is over one of the service's limits (rate, open streams); it may retry
    after ``retry_after_s`` when that is known."""

    def __init__(self, message: str, *, reason: str, retry_after_s: float | None = None
                 ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(DomainError):
    """The call's deadline passed before its work was committed; nothing of it was."""
