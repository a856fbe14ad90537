# ruff: noqa: N802 - method names are the gRPC contract's
"""gRPC adapter of the token issuer (idc.ops.v1.TokenService): admin principals only."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2

from idc.ops.v1 import token_service_pb2 as pb
from idc.ops.v1 import token_service_pb2_grpc
from services.common.auth import Role, require_role
from services.common.timestamps import to_timestamp
from services.order.token_issuer import TokenIssuer, TokenRecord, principal_request


def _seconds(request: object, field: str) -> float | None:
    if not request.HasField(field):  # type: ignore[attr-defined]
        return None
    duration: duration_pb2.Duration = getattr(request, field)
    return duration.seconds + duration.nanos / 1e9


def token_info(record: TokenRecord) -> pb.TokenInfo:
    info = pb.TokenInfo(
        token_id=record.token_id, principal_id=record.principal_id, subject=record.subject,
        role=record.role, tenant_id=record.tenant or "", telco=record.telco or "",
        issue_time=to_timestamp(record.issued_at), expire_time=to_timestamp(record.expires_at),
        issued_by=record.issued_by, key_id=record.key_id)
    if record.revoked_at is not None:
        info.revoke_time.CopyFrom(to_timestamp(record.revoked_at))
    return info


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer

    def IssueToken(self, request: pb.IssueTokenRequest, context: grpc.ServicerContext
                   ) -> pb.IssueTokenResponse:
        actor = require_role(Role.ADMIN)
        principal = principal_request(request.subject, request.role, request.tenant_id,
                                      request.telco)
        token, record = self._issuer.issue(actor, principal, _seconds(request, "ttl"))
        return pb.IssueTokenResponse(token=token, info=token_info(record))

    def ListTokens(self, request: pb.ListTokensRequest, context: grpc.ServicerContext
                   ) -> pb.ListTokensResponse:
        actor = require_role(Role.ADMIN)
        records, next_page_token = self._issuer.list(actor, request.include_inactive,
                                                     request.page_size, request.page_token)
        return pb.ListTokensResponse(tokens=[token_info(r) for r in records],
                                     next_page_token=next_page_token)

    def RotateToken(self, request: pb.RotateTokenRequest, context: grpc.ServicerContext
                    ) -> pb.RotateTokenResponse:
        actor = require_role(Role.ADMIN)
        token, new, old = self._issuer.rotate(
            actor, request.token_id, _seconds(request, "ttl"), _seconds(request, "grace"))
        return pb.RotateTokenResponse(token=token, info=token_info(new),
                                      replaced=token_info(old))

    def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext
                    ) -> pb.RevokeTokenResponse:
        actor = require_role(Role.ADMIN)
        return pb.RevokeTokenResponse(info=token_info(self._issuer.revoke(actor,
                                                                         request.token_id)))
