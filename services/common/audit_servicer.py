# ruff: noqa: N802 - method names are the gRPC contract's
"""``idc.ops.v1.AuditService``: a service's hash chain per circuit, for ``idcctl audit
verify`` (ops and admin only)."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.orm import Session, sessionmaker

from idc.ops.v1 import audit_service_pb2 as pb
from idc.ops.v1 import audit_service_pb2_grpc as pb_grpc
from services.common.audit_chain import AuditChain
from services.common.auth import Role, require_role
from services.common.errors import InvalidArgument
from services.common.paging import checked, encode_token, page_request
from services.common.servicers import register

PAGE_SIZE = 1000


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, chain: AuditChain, factory: sessionmaker[Session]) -> None:
        self._chain = chain
        self._factory = factory

    def ListChainEntries(self, request: pb.ListChainEntriesRequest, context: Any
                         ) -> pb.ListChainEntriesResponse:
        require_role(Role.OPS, Role.ADMIN)
        if not request.circuit_id:
            raise InvalidArgument.for_field("circuit_id", "is required")
        page = page_request(request.page_size, request.page_token, default=PAGE_SIZE,
                            maximum=PAGE_SIZE)
        (after_sequence,) = (0,) if page.after is None else checked(page.after, int)
        with self._factory() as session:
            links = self._chain.links(session, request.circuit_id, after_sequence,
                                     page.limit + 1)
            head_sequence, head_hash = self._chain.head(session, request.circuit_id)
        chained = [link for link in links if link.sequence]
        more = len(chained) > page.limit
        shown = links[:page.limit] if more else links
        return pb.ListChainEntriesResponse(
            entries=[pb.ChainEntry(
                sequence=link.sequence, kind=link.kind, entry_id=link.entry_id,
                content=link.content.decode() if link.content is not None else "",
                prev_hash=link.prev_hash, hash=link.hash, signer_telco=link.signer_telco,
                signature=link.signature) for link in shown],
            next_page_token=encode_token((shown[-1].sequence,)) if more else "",
            head_sequence=head_sequence, head_hash=head_hash,
        )


def register_audit(server: grpc.Server, chain: AuditChain, factory: sessionmaker[Session]
                   ) -> str:
    """Serve AuditService on ``server`` for this service's chain."""
    return register(server, pb.DESCRIPTOR, "AuditService",
                    pb_grpc.add_AuditServiceServicer_to_server, AuditServicer(chain, factory))
