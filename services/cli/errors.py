"""How idcctl turns a refused call into a message and an exit code scripts can test."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class ExitCode(enum.IntEnum):
    """idcctl's exit codes (also listed in ``idcctl --help``)."""

    OK = 0
    ERROR = 1  # anything else: the server failed (INTERNAL, UNKNOWN), a local problem
    USAGE = 2  # the command line itself is wrong (argparse's own code)
    INVALID_ARGUMENT = 3  # the server refused a field; the violations are printed
    NOT_FOUND = 4
    DENIED = 5  # UNAUTHENTICATED or PERMISSION_DENIED: check the token
    CONFLICT = 6  # FAILED_PRECONDITION, ALREADY_EXISTS, RESOURCE_EXHAUSTED (capacity)
    UNAVAILABLE = 7  # the server cannot be reached or did not answer in time
    ORDER_NOT_COMPLETED = 8  # `watch`: the order ended REJECTED, FAILED or CANCELLED
    TAMPERED = 9  # `audit verify`: an entry does not match its chain or signature


EXIT_CODE_HELP = """exit codes:
  0  success
  1  other error (server-side failure, local problem)
  2  bad command line
  3  the server refused an argument (INVALID_ARGUMENT; field violations printed)
  4  not found
  5  not authenticated or not allowed (check IDC_TOKEN / --token)
  6  refused in the current state: FAILED_PRECONDITION, ALREADY_EXISTS, RESOURCE_EXHAUSTED
  7  server unreachable or no answer within the deadline
  8  watch: the order ended REJECTED, FAILED or CANCELLED
  9  audit verify: an entry does not match its chain or its signature"""

_EXIT_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.DENIED,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.DENIED,
    grpc.StatusCode.FAILED_PRECONDITION: ExitCode.CONFLICT,
    grpc.StatusCode.ALREADY_EXISTS: ExitCode.CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ExitCode.CONFLICT,
    grpc.StatusCode.ABORTED: ExitCode.CONFLICT,
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNAVAILABLE,
}


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class CallFailure:
    """A refused call as the user should see it."""

    code: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.ERROR

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "field_violations": [
                {"field": v.field, "description": v.description} for v in self.violations
            ],
        }

    def lines(self) -> list[str]:
        out = [f"error: {self.code}: {self.message}"]
        out += [f"  {v.field}: {v.description}" for v in self.violations]
        return out


def failure_of(error: grpc.RpcError, target: str) -> CallFailure:
    """Code, message and BadRequest field violations of a failed call."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    violations: list[FieldViolation] = []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # raised errors are Calls
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations += [
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                ]
    if code is grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach {target}: {message}"
        if "CERTIFICATE_VERIFY_FAILED" in message:
            message += ("\n  the server's certificate is not signed by a CA idcctl trusts: "
                        "give its CA with --ca-file (or IDC_TLS_CA_FILE)")
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{target} did not answer in time ({message})"
    return CallFailure(
        code=code.name,
        message=message,
        violations=violations,
        exit_code=_EXIT_BY_STATUS.get(code, ExitCode.ERROR),
    )


class CliError(Exception):
    """A problem idcctl itself found (bad file, no token); printed without a traceback."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
