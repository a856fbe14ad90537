"""The price book: MRC by bandwidth step and term, NRC and burst price, per currency.

Configuration data (services/order/data/price_book.toml), not code. Amounts are Decimal
parsed from strings.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from services.common.limits import MAX_BANDWIDTH_MBPS, MIN_BANDWIDTH_MBPS

DEFAULT_PRICE_BOOK = Path(__file__).resolve().parent.parent / "data" / "price_book.toml"


class PriceBookError(ValueError):
    """The price book file is inconsistent; the message names the entry."""


@dataclass(frozen=True)
class PriceTerms:
    currency: str
    mrc: Decimal
    nrc: Decimal
    burst_price_per_mbps: Decimal
    term_months: int
    price_book_version: str
    # Share of the MRC owed per remaining whole month of the term on an early disconnect.
    termination_share: Decimal = Decimal(0)


@dataclass(frozen=True)
class CurrencyPrices:
    nrc: Decimal
    burst_price_per_mbps: Decimal
    mrc: Mapping[tuple[int, int], Decimal]  # (bandwidth step, term) -> MRC
    # Per Mbps per started hour of a boost; None: boosts are not sold in the currency.
    boost_price_per_mbps_hour: Decimal | None = None


@dataclass(frozen=True)
class PriceBook:
    version: str
    terms: tuple[int, ...]
    bandwidth_steps_mbps: tuple[int, ...]
    currencies: Mapping[str, CurrencyPrices]
    termination_share: Decimal = Decimal(0)

    def price(self, bandwidth_mbps: int, term_months: int, currency: str) -> PriceTerms:
        """Terms for one offered combination; KeyError if it is not offered (validate first)."""
        prices = self.currencies[currency]
        return PriceTerms(
            currency=currency,
            mrc=prices.mrc[(bandwidth_mbps, term_months)],
            nrc=prices.nrc,
            burst_price_per_mbps=prices.burst_price_per_mbps,
            term_months=term_months,
            price_book_version=self.version,
            termination_share=self.termination_share,
        )


def started_hours(start: datetime, end: datetime) -> int:
    """Hours of [start, end), a started hour counted whole."""
    return max(0, math.ceil((end - start).total_seconds() / 3600))


def boost_charge(price_per_mbps_hour: Decimal, added_mbps: int, start: datetime,
                 end: datetime) -> Decimal:
    """A boost's charge for [start, end): added Mbps * started hours * price, rounded once,
    half-up, to the minor unit (billing's rule for the hours booked and in force)."""
    amount = price_per_mbps_hour * added_mbps * started_hours(start, end)
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _amount(raw: object, where: str) -> Decimal:
    if not isinstance(raw, str):
        raise PriceBookError(f"{where}: amounts are decimal strings, got {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise PriceBookError(f"{where}: {raw!r} is not a decimal amount") from exc
    if not value.is_finite() or value < 0:
        raise PriceBookError(f"{where}: {raw!r} must be a non-negative amount")
    return value


def load_price_book(path: Path = DEFAULT_PRICE_BOOK) -> PriceBook:
    with path.open("rb") as file:
        return parse_price_book(tomllib.load(file))


def parse_price_book(data: Mapping[str, Any]) -> PriceBook:
    terms = tuple(int(t) for t in data["terms"])
    steps = tuple(int(s) for s in data["bandwidth_steps_mbps"])
    if list(steps) != sorted(set(steps)):
        raise PriceBookError("bandwidth_steps_mbps must be ascending")
    # A step is a committed rate the routers must take (services.common.limits).
    if steps[0] < MIN_BANDWIDTH_MBPS or steps[-1] > MAX_BANDWIDTH_MBPS:
        raise PriceBookError(f"bandwidth_steps_mbps must lie within {MIN_BANDWIDTH_MBPS}.."
                             f"{MAX_BANDWIDTH_MBPS} Mbps, the rates the routers take")
    currencies: dict[str, CurrencyPrices] = {}
    for code, entry in data["currencies"].items():
        mrc: dict[tuple[int, int], Decimal] = {}
        for step in steps:
            row = entry["mrc"].get(str(step))
            if row is None or len(row) != len(terms):
                raise PriceBookError(f"{code} mrc {step}: needs one amount per term {terms}")
            for term, raw in zip(terms, row, strict=True):
                mrc[(step, term)] = _amount(raw, f"{code} mrc {step} Mbps {term} months")
        currencies[code] = CurrencyPrices(
            nrc=_amount(entry["nrc"], f"{code} nrc"),
            burst_price_per_mbps=_amount(
                entry["burst_price_per_mbps"], f"{code} burst_price_per_mbps"
            ),
            mrc=mrc,
            boost_price_per_mbps_hour=(
                _amount(entry["boost_price_per_mbps_hour"], f"{code} boost_price_per_mbps_hour")
                if "boost_price_per_mbps_hour" in entry else None),
        )
    share = _amount(data.get("termination_share", "0"), "termination_share")
    if share > 1:
        raise PriceBookError(f"termination_share: {share} is a share of the MRC, at most 1")
    return PriceBook(str(data["version"]), terms, steps, currencies, share)
