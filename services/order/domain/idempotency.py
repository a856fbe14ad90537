"""Repeated requests: a request id names one order of its tenant for good; repeating the
request unchanged answers that order again, reusing the id for other content is refused."""

from __future__ import annotations

from services.common.errors import AlreadyExists


def reused_request_id(request_id: str, order_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was already used for order {order_id} with "
        "different content; use a new request_id for a different request, or repeat "
        "the original request unchanged"
    )


def replayed_order(request_id: str, fingerprint: str, earlier: tuple[str, str] | None
                   ) -> str | None:
    """The id of the order a request repeats, given the (order id, request fingerprint) of
    the order placed earlier with its request id (None: the request is new)."""
    if earlier is None:
        return None
    order_id, earlier_fingerprint = earlier
    if earlier_fingerprint != fingerprint:
        raise reused_request_id(request_id, order_id)
    return order_id
