"""A printable billing document: what it says, apart from how it is laid out.

Invoices are built into one (services/billing/export.py); any other document billing issues
(a credit note) builds its own and hands it to the same renderer (services/billing/pdf.py).
Amounts arrive here as exact decimals and leave as text in the issuer's number format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from babel.numbers import format_currency

from services.billing.domain.money import minor_unit


@dataclass(frozen=True)
class Party:
    heading: str
    lines: list[str]


@dataclass(frozen=True)
class DocumentLine:
    # The first entry is the line's description, the rest its evidence, one fact a row.
    text: list[str]
    quantity: str
    amount: str


@dataclass(frozen=True)
class Section:
    heading: str
    lines: list[str]


@dataclass(frozen=True)
class Document:
    title: str
    # The document's number (or draft label) and issuer: the footer of every page.
    reference: str
    issuer: str
    facts: list[tuple[str, str]]
    parties: list[Party]
    # Headings of the description, quantity and amount columns.
    columns: tuple[str, str, str]
    lines: list[DocumentLine]
    # (label, amount, emphasised)
    totals: list[tuple[str, str, bool]]
    sections: list[Section] = field(default_factory=list)
    fine_print: str = ""


@dataclass(frozen=True)
class MoneyFormat:
    """Amounts of one currency in a locale's format: thousands separators, the currency's
    minor unit (``1,234,567.50`` SGD, ``1,234,568`` JPY)."""

    currency: str
    locale: str

    def __post_init__(self) -> None:
        minor_unit(self.currency)

    def number(self, value: Decimal) -> str:
        # At least the minor unit's digits, and every digit the value has (a unit price of
        # 0.0125): formatting never rounds.
        return format_currency(
            value, self.currency, format="#,##0.00", locale=self.locale,
            currency_digits=True, decimal_quantization=False,
        )

    def amount(self, value: Decimal) -> str:
        return f"{self.currency} {self.number(value)}"
