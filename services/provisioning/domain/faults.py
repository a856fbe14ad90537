"""Why a router step failed, as plain data (converted to ``idc.type.v1.RouterError``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from idc.type.v1 import router_error_pb2


class FaultKind(enum.Enum):
    RPC_ERROR = router_error_pb2.ROUTER_ERROR_KIND_RPC_ERROR
    TRANSPORT = router_error_pb2.ROUTER_ERROR_KIND_TRANSPORT
    TIMEOUT = router_error_pb2.ROUTER_ERROR_KIND_TIMEOUT
    PAYLOAD_MISMATCH = router_error_pb2.ROUTER_ERROR_KIND_PAYLOAD_MISMATCH
    VERIFICATION_FAILED = router_error_pb2.ROUTER_ERROR_KIND_VERIFICATION_FAILED
    INTERNAL = router_error_pb2.ROUTER_ERROR_KIND_INTERNAL


@dataclass(frozen=True)
class RouterFault:
    kind: FaultKind
    router_name: str
    message: str
    error_type: str = ""
    error_tag: str = ""
    error_severity: str = ""
    error_app_tag: str = ""
    error_path: str = ""
    raw: str = ""
    retryable: bool = False

    def to_proto(self) -> router_error_pb2.RouterError:
        return router_error_pb2.RouterError(
            kind=self.kind.value,
            router_name=self.router_name,
            error_type=self.error_type,
            error_tag=self.error_tag,
            error_severity=self.error_severity,
            error_app_tag=self.error_app_tag,
            error_path=self.error_path,
            message=self.message,
            raw=self.raw,
            retryable=self.retryable,
        )

    @classmethod
    def from_proto(cls, error: router_error_pb2.RouterError) -> RouterFault:
        return cls(
            kind=FaultKind(error.kind) if error.kind else FaultKind.INTERNAL,
            router_name=error.router_name,
            message=error.message,
            error_type=error.error_type,
            error_tag=error.error_tag,
            error_severity=error.error_severity,
            error_app_tag=error.error_app_tag,
            error_path=error.error_path,
            raw=error.raw,
            retryable=error.retryable,
        )


class RouterFailure(Exception):
    """A router step failed; ``fault`` says how."""

    def __init__(self, fault: RouterFault) -> None:
        super().__init__(f"{fault.router_name}: {fault.message}")
        self.fault = fault


class PayloadMismatch(RouterFailure):
    """The payload rendered now is not the one approved; nothing was sent to the router."""

    def __init__(self, fault: RouterFault, rendered_sha256: str) -> None:
        super().__init__(fault)
        self.rendered_sha256 = rendered_sha256
