"""Money: exact decimals, one half-up rounding to the currency's minor unit."""

from decimal import Decimal

import pytest

from services.billing.domain.money import format_amount, parse_amount, round_money
from services.common.errors import InvalidArgument


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        # 2.675 is 2.67499999... as a float: only an exact decimal rounds it up.
        ("2.675", "SGD", "2.68"),
        ("2.665", "USD", "2.67"),  # half-up, not banker's rounding (2.66)
        ("-2.675", "CNY", "-2.68"),  # half away from zero for corrections
        ("1234.5", "JPY", "1235"),
        ("0.004999", "SGD", "0.00"),
    ],
)
def test_round_money_half_up_to_minor_unit(value: str, currency: str, expected: str) -> None:
    assert format_amount(round_money(Decimal(value), currency)) == expected


def test_unknown_currency_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument, match="'EUR' is not a billing currency"):
        round_money(Decimal("1"), "EUR")


@pytest.mark.parametrize("text", ["1e3", "1,000.00", "", "12.", "$5", " 1"])
def test_amounts_must_be_plain_decimal_strings(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"price\.mrc"):
        parse_amount(text, "price.mrc")


def test_amount_is_exact() -> None:
    assert parse_amount("0.0125", "x") * 3 == Decimal("0.0375")
