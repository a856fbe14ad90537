"""Who invoices whom: billing entities (legal issuer, tax) and their customers (tenants).

Configuration data (services/billing/data/billing_entities.toml), parsed here without I/O.
A tenant the file does not list is billed by the file's ``default_entity``, in that
entity's time zone, under its tenant id as legal name, in the currency of its circuits'
price terms.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.billing.domain.money import minor_unit, parse_rate
from services.common.errors import InvalidArgument, NotFound


@dataclass(frozen=True)
class Remittance:
    """Where customers pay an entity's invoices (printed on every invoice)."""

    bank: str
    account_name: str
    account_number: str
    swift_bic: str

    def lines(self) -> list[str]:
        return [
            f"Bank: {self.bank}",
            f"Account name: {self.account_name}",
            f"Account number: {self.account_number}",
            f"SWIFT/BIC: {self.swift_bic}",
        ]


@dataclass(frozen=True)
class BillingEntity:
    id: str
    legal_name: str
    address: str
    tax_id: str
    tax_label: str
    tax_rate: Decimal
    time_zone: ZoneInfo
    invoice_prefix: str
    # Due date = issue date + this many days ("Net 30").
    payment_terms_days: int
    remittance: Remittance
    # Babel locale of the invoice's number format (thousands separator, decimal mark).
    locale: str = "en"
    # The telco (order catalogue id, e.g. "sg") whose ops serve this entity's customers:
    # the order service shows them the customers' contacts. Empty: no telco's ops.
    telco: str = ""


@dataclass(frozen=True)
class Customer:
    tenant_id: str
    entity: BillingEntity
    legal_name: str
    address: str
    time_zone: ZoneInfo
    # None: the currency of the customer's circuits' price terms.
    currency: str | None
    configured: bool


@dataclass(frozen=True)
class BillingDirectory:
    entities: Mapping[str, BillingEntity]
    customers: Mapping[str, Customer]
    default_entity: BillingEntity

    def customer(self, tenant_id: str) -> Customer:
        known = self.customers.get(tenant_id)
        if known is not None:
            return known
        entity = self.default_entity
        return Customer(
            tenant_id=tenant_id,
            entity=entity,
            legal_name=tenant_id,
            address="",
            time_zone=entity.time_zone,
            currency=None,
            configured=False,
        )

    def entity(self, entity_id: str) -> BillingEntity:
        try:
            return self.entities[entity_id]
        except KeyError:
            known = ", ".join(sorted(self.entities))
            raise NotFound(
                f"billing entity {entity_id!r} does not exist (known: {known})"
            ) from None


def parse_directory(text: str, source: str = "billing entities") -> BillingDirectory:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidArgument(f"{source}: not valid TOML: {error}") from error
    entities = {
        entity_id: _entity(entity_id, fields, source)
        for entity_id, fields in _table(data, "entities", source).items()
    }
    if not entities:
        raise InvalidArgument(f"{source}: no [entities.<id>] table")
    default_id = data.get("default_entity")
    if default_id not in entities:
        raise InvalidArgument(f"{source}: default_entity {default_id!r} is not an entity")
    customers = {
        tenant_id: _customer(tenant_id, fields, entities, source)
        for tenant_id, fields in _table(data, "customers", source).items()
    }
    return BillingDirectory(entities, customers, entities[default_id])


def _table(data: Mapping[str, Any], name: str, source: str) -> dict[str, Mapping[str, Any]]:
    table = data.get(name, {})
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise InvalidArgument(f"{source}: [{name}] must hold one table per id")
    return table


def _text(fields: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    value = fields.get(name, default)
    if not isinstance(value, str) or (default is None and not value):
        raise InvalidArgument(f"{where}: {name} must be a non-empty string")
    return value


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"{where}: time_zone {name!r} is not an IANA time zone") from None


def _entity(entity_id: str, fields: Mapping[str, Any], source: str) -> BillingEntity:
    where = f"{source} [entities.{entity_id}]"
    return BillingEntity(
        id=entity_id,
        legal_name=_text(fields, "legal_name", where),
        address=_text(fields, "address", where, ""),
        tax_id=_text(fields, "tax_id", where, ""),
        tax_label=_text(fields, "tax_label", where, "Tax"),
        # A string, so the rate never passes through a float.
        tax_rate=parse_rate(_text(fields, "tax_rate", where), f"{where} tax_rate"),
        time_zone=_zone(_text(fields, "time_zone", where), where),
        invoice_prefix=_text(fields, "invoice_prefix", where),
        payment_terms_days=_terms_days(fields, where),
        remittance=_remittance(fields.get("remittance"), where),
        locale=_text(fields, "locale", where, "en"),
        telco=_text(fields, "telco", where, ""),
    )


def _terms_days(fields: Mapping[str, Any], where: str) -> int:
    days = fields.get("payment_terms_days")
    if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 365:
        raise InvalidArgument(f"{where}: payment_terms_days must be a whole number 0 to 365")
    return days


def _remittance(fields: object, where: str) -> Remittance:
    where = f"{where} remittance"
    if not isinstance(fields, dict):
        raise InvalidArgument(
            f"{where}: a table with bank, account_name, account_number and swift_bic is required"
        )
    return Remittance(
        bank=_text(fields, "bank", where),
        account_name=_text(fields, "account_name", where),
        account_number=_text(fields, "account_number", where),
        swift_bic=_text(fields, "swift_bic", where),
    )


def _customer(
    tenant_id: str,
    fields: Mapping[str, Any],
    entities: Mapping[str, BillingEntity],
    source: str,
) -> Customer:
    where = f"{source} [customers.{tenant_id}]"
    entity_id = _text(fields, "entity", where)
    if entity_id not in entities:
        raise InvalidArgument(f"{where}: entity {entity_id!r} is not an entity")
    entity = entities[entity_id]
    currency = fields.get("currency")
    if currency is not None:
        minor_unit(_text(fields, "currency", where))
    zone_name = fields.get("time_zone")
    return Customer(
        tenant_id=tenant_id,
        entity=entity,
        legal_name=_text(fields, "legal_name", where),
        address=_text(fields, "address", where, ""),
        time_zone=entity.time_zone if zone_name is None else _zone(str(zone_name), where),
        currency=currency,
        configured=True,
    )
