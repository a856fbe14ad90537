"""What makes a request repeatable: new ids, the fingerprint of a request's content, and
the order an earlier request with the same request id placed."""

from __future__ import annotations

import hashlib
import uuid

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from services.order import store
from services.order.domain.idempotency import replayed_order
from services.order.tables import OrderRow


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def fingerprint(kind: str, request: Message) -> str:
    """The content of ``request`` without its request id and its validate-only flag (kind:
    which call), hashed: a validate-only call answers what the real one would."""
    content = type(request)()
    content.CopyFrom(request)
    content.ClearField("request_id")
    if "validate_only" in content.DESCRIPTOR.fields_by_name:
        content.ClearField("validate_only")
    digest = hashlib.sha256(kind.encode() + b"\0")
    digest.update(content.SerializeToString(deterministic=True))
    return digest.hexdigest()


def replay(session: Session, tenant: str, request_id: str, request_fingerprint: str
           ) -> OrderRow | None:
    """The order placed earlier with this request id and content; AlreadyExists when the
    id was used for other content."""
    existing = store.order_by_request(session, tenant, request_id)
    if existing is not None:
        replayed_order(request_id, request_fingerprint, (existing.id, existing.request_hash))
    return existing
