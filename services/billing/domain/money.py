"""Money: exact decimals from strings or integers, rounded once, half-up, to the minor unit."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Context, Decimal

from services.common.errors import InvalidArgument

# ISO 4217 exponents of the currencies billing accepts.
MINOR_UNITS: dict[str, int] = {"SGD": 2, "USD": 2, "CNY": 2, "JPY": 0}

# Working precision for line arithmetic: far more digits than any price times a factor needs,
# so the only rounding that matters is the one to the minor unit.
EXACT = Context(prec=60, rounding=ROUND_HALF_UP)

# The factor shown on an invoice line (28 significant digits, Python's default precision).
FACTOR_DISPLAY = Context(prec=28, rounding=ROUND_HALF_UP)

_AMOUNT = re.compile(r"^-?\d+(\.\d+)?$")


def minor_unit(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        known = ", ".join(sorted(MINOR_UNITS))
        raise InvalidArgument.for_field(
            "currency_code", f"{currency!r} is not a billing currency (known: {known})"
        ) from None


def parse_amount(text: str, field: str) -> Decimal:
    """A Money amount in plain decimal notation ("1250.00", "0.0125", "-40.50")."""
    if not isinstance(text, str) or not _AMOUNT.match(text):
        raise InvalidArgument.for_field(
            field, f"{text!r} is not a plain decimal amount such as '1250.00'"
        )
    return Decimal(text)


def parse_rate(text: str, field: str) -> Decimal:
    """A non-negative decimal rate such as a tax rate ("0.09")."""
    rate = parse_amount(text, field)
    if rate < 0:
        raise InvalidArgument.for_field(field, f"{text!r} must not be negative")
    return rate


def round_money(value: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit (2.675 SGD -> 2.68)."""
    exponent = Decimal(1).scaleb(-minor_unit(currency))
    return value.quantize(exponent, rounding=ROUND_HALF_UP, context=EXACT)


def format_amount(value: Decimal) -> str:
    """Plain notation, never an exponent ("0.00", "1250.50")."""
    return f"{value:f}"
