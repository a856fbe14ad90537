"""What a customer may ask for: every field checked, every problem reported at once.

Free text that reaches a router (the circuit description) is limited to printable ASCII
without the XML metacharacters ``<``, ``>`` and ``&`` (which also rules out ``]]>``): the
routers' templates escape anyway, but a description that needs escaping is refused at the
door so no payload ever depends on it. Text that stays in the order database (customer
reference, reasons, contacts) may be any printable Unicode.

Every value that reaches a router is held to the limits provisioning renders within
(services.common.limits), so an accepted order never waits for a payload that cannot exist.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.common.limits import MAX_BURST_MBPS, MAX_DESCRIPTION
from services.order.domain.catalogue import Catalogue, Port, Side
from services.order.domain.pricing import PriceBook

MAX_CUSTOMER_REFERENCE = 64
MAX_REASON = 500
MAX_REQUEST_ID = 128
MAX_CONTACTS = 10
MAX_CONTACT_FIELD = 200
XML_METACHARACTERS = "<>&"

BURST_TOO_LARGE = f"must be at most {MAX_BURST_MBPS} Mbps (what the routers' rate limits take)"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")
_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# A purchase-order number crosses the border to billing (README, personal data): the shape
# of a number, so a name, an address or an e-mail cannot pass as one.
MAX_PURCHASE_ORDER = 35
_PURCHASE_ORDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ./_#-]*")


@dataclass(frozen=True)
class CircuitRequest:
    """A circuit as the customer asks for it (the CircuitSpec, in domain terms)."""

    a_end_port_id: str
    z_end_port_id: str
    a_end_vlan_id: int | None
    z_end_vlan_id: int | None
    bandwidth_mbps: int
    burst_mbps: int
    term_months: int
    currency: str
    customer_reference: str
    description: str
    purchase_order: str = ""


@dataclass(frozen=True)
class ContactInfo:
    role: str
    name: str
    email: str
    phone: str


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch).startswith("C") for ch in value)


def text_problem(value: str, max_length: int, *, required: bool = False) -> str | None:
    """Why ``value`` is not acceptable free text, or None."""
    if required and not value.strip():
        return "is required"
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    if _has_control(value):
        return "contains control or non-printable characters; use printable text only"
    return None


def description_problem(value: str) -> str | None:
    problem = text_problem(value, MAX_DESCRIPTION)
    if problem:
        return problem
    if any(ch in XML_METACHARACTERS for ch in value):
        return "must not contain <, > or & (it is configured on the routers)"
    if not value.isascii():
        return "must be printable ASCII (it is configured on the routers)"
    return None


def purchase_order_problem(value: str) -> str | None:
    if not value:
        return None
    if len(value) > MAX_PURCHASE_ORDER:
        return f"is {len(value)} characters long; at most {MAX_PURCHASE_ORDER} are allowed"
    if not _PURCHASE_ORDER.fullmatch(value) or "@" in value:
        return ("must be a purchase-order number: letters, digits, space and . / _ # -, "
                "starting with a letter or digit")
    return None


def request_id_problem(value: str) -> str | None:
    if not value:
        return "is required: a client-chosen idempotency key such as a UUID"
    if len(value) > MAX_REQUEST_ID or not _REQUEST_ID.fullmatch(value):
        return f"must be 1 to {MAX_REQUEST_ID} characters of A-Z a-z 0-9 . _ : -"
    return None


def id_problem(value: str, what: str) -> str | None:
    if not value:
        return f"is required: the {what} id"
    if not _ID.fullmatch(value):
        return f"is not a valid {what} id"
    return None


def require_reason(field: str, value: str, *, required: bool) -> None:
    problem = text_problem(value, MAX_REASON, required=required)
    if problem:
        raise InvalidArgument.for_field(field, problem)


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        summary = "; ".join(f"{v.field} {v.description}" for v in violations)
        raise InvalidArgument(f"the request is not valid: {summary}", violations)


def validate_contacts(contacts: list[ContactInfo], prefix: str = "contacts") -> None:
    violations: list[FieldViolation] = []
    if len(contacts) > MAX_CONTACTS:
        violations.append(FieldViolation(prefix, f"at most {MAX_CONTACTS} contacts"))
    for index, contact in enumerate(contacts[:MAX_CONTACTS]):
        where = f"{prefix}[{index}]"
        for name, value in (("role", contact.role), ("name", contact.name)):
            problem = text_problem(value, MAX_CONTACT_FIELD)
            if problem:
                violations.append(FieldViolation(f"{where}.{name}", problem))
        if contact.email and not (
            len(contact.email) <= MAX_CONTACT_FIELD and _EMAIL.fullmatch(contact.email)
        ):
            violations.append(FieldViolation(f"{where}.email", "is not an e-mail address"))
        if contact.phone and not _E164.fullmatch(contact.phone):
            violations.append(
                FieldViolation(f"{where}.phone", "must be in E.164 form, e.g. +6561234567")
            )
    raise_if(violations)


def _port(
    catalogue: Catalogue, port_id: str, side: Side, field: str, tenant: str | None,
    violations: list[FieldViolation],
) -> Port | None:
    port = catalogue.ports.get(port_id)
    if port is None or not port.visible_to(tenant):
        violations.append(
            FieldViolation(field, f"port {port_id!r} does not exist; ListSites shows the ports")
        )
        return None
    if catalogue.side_of(port) is not side:
        violations.append(FieldViolation(field, f"port {port_id} is not on the {side} side"))
        return None
    site = catalogue.site_of(port)
    if not catalogue.offered_to(site, tenant):
        violations.append(FieldViolation(field, (
            f"port {port_id} is a sandbox port: only sandbox tenants order it"
            if site.sandbox else
            f"port {port_id} is not a sandbox port: a sandbox tenant orders only the ports "
            "of sandbox sites (ListSites shows them)")))
        return None
    return port


def validate_circuit_request(
    request: CircuitRequest,
    catalogue: Catalogue,
    price_book: PriceBook,
    tenant: str | None,
    prefix: str = "spec",
) -> None:
    """Raise InvalidArgument with one field violation per problem found."""
    violations: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(f"{prefix}.{field}", description))

    a_port = _port(catalogue, request.a_end_port_id, Side.SINGAPORE,
                   f"{prefix}.a_end_port_id", tenant, violations)
    z_port = _port(catalogue, request.z_end_port_id, Side.CHONGQING,
                   f"{prefix}.z_end_port_id", tenant, violations)
    for field, port, vlan in (
        ("a_end_vlan_id", a_port, request.a_end_vlan_id),
        ("z_end_vlan_id", z_port, request.z_end_vlan_id),
    ):
        if vlan is not None and port is not None and not (
            port.vlan_first <= vlan <= port.vlan_last
        ):
            bad(field, f"VLAN {vlan} is outside the port's range "
                       f"{port.vlan_first}..{port.vlan_last}")
    steps = price_book.bandwidth_steps_mbps
    if request.bandwidth_mbps not in steps:
        bad("bandwidth_mbps",
            f"{request.bandwidth_mbps} Mbps is not offered; choose one of "
            + ", ".join(str(s) for s in steps))
    speeds = [p.speed_mbps for p in (a_port, z_port) if p is not None]
    if speeds and request.bandwidth_mbps in steps and request.bandwidth_mbps > min(speeds):
        bad("bandwidth_mbps", f"{request.bandwidth_mbps} Mbps exceeds the port speed "
                              f"({min(speeds)} Mbps)")
    if request.burst_mbps < 0:
        bad("burst_mbps", "must be zero or more")
    elif request.burst_mbps > MAX_BURST_MBPS:
        bad("burst_mbps", BURST_TOO_LARGE)
    elif speeds and request.bandwidth_mbps + request.burst_mbps > min(speeds):
        bad("burst_mbps", f"bandwidth plus burst must fit the port speed ({min(speeds)} Mbps)")
    if request.term_months not in price_book.terms:
        bad("term_months", f"{request.term_months} months is not offered; choose one of "
                           + ", ".join(str(t) for t in price_book.terms))
    if request.currency not in price_book.currencies:
        bad("currency_code", f"{request.currency!r} is not offered; choose one of "
                             + ", ".join(sorted(price_book.currencies)))
    problem = text_problem(request.customer_reference, MAX_CUSTOMER_REFERENCE)
    if problem:
        bad("customer_reference", problem)
    problem = purchase_order_problem(request.purchase_order)
    if problem:
        bad("purchase_order", problem)
    problem = description_problem(request.description)
    if problem:
        bad("description", problem)
    raise_if(violations)


def validate_bandwidth_change(
    current_mbps: int, new_mbps: int, burst_mbps: int, port_speeds: list[int],
    price_book: PriceBook,
) -> None:
    violations: list[FieldViolation] = []
    steps = price_book.bandwidth_steps_mbps
    if new_mbps not in steps:
        violations.append(FieldViolation(
            "bandwidth_mbps",
            f"{new_mbps} Mbps is not offered; choose one of " + ", ".join(map(str, steps))))
    elif new_mbps > min(port_speeds):
        violations.append(FieldViolation(
            "bandwidth_mbps", f"{new_mbps} Mbps exceeds the port speed ({min(port_speeds)} Mbps)"))
    elif new_mbps == current_mbps:
        violations.append(FieldViolation(
            "bandwidth_mbps", f"the circuit already has {current_mbps} Mbps"))
    if burst_mbps < 0:
        violations.append(FieldViolation("burst_mbps", "must be zero or more"))
    elif burst_mbps > MAX_BURST_MBPS:
        violations.append(FieldViolation("burst_mbps", BURST_TOO_LARGE))
    elif new_mbps in steps and new_mbps + burst_mbps > min(port_speeds):
        violations.append(FieldViolation(
            "burst_mbps",
            f"bandwidth plus burst must fit the port speed ({min(port_speeds)} Mbps)"))
    raise_if(violations)


def check_quote_unexpired(quote_id: str, expire_at: datetime, now: datetime) -> None:
    """An order placed from a quote gets the quoted price only while the quote holds."""
    if expire_at <= now:
        raise FailedPrecondition(
            f"quote {quote_id} expired at {expire_at.isoformat()}; ask for a new quote")
