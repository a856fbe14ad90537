"""Credit notes: what is creditable, the tax by cumulative half-up rounding, the balance."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.billing.domain.credit_notes import (
    BalanceInvoice,
    CreditableLine,
    CreditComputation,
    CreditRequest,
    CreditScope,
    EarlierCredits,
    IssuedCredit,
    balances,
    compute_credit,
)
from services.billing.domain.rating import BillingMonth
from services.common.errors import FailedPrecondition, InvalidArgument

LINES = [
    CreditableLine("ln-mrc", "c-1", "MRC 100 Mbps", Decimal("2180.25")),
    CreditableLine("ln-burst", "c-1", "Burst", Decimal("189.00")),
    CreditableLine("ln-adj", "c-1", "Adjustment", Decimal("-10.00")),
]
SUBTOTAL = Decimal("2359.25")  # tax 9 %: 212.3325 -> 212.33
RATE = Decimal("0.09")


def credit(request: CreditRequest, earlier: EarlierCredits | None = None) -> CreditComputation:
    return compute_credit(request, LINES, SUBTOTAL, RATE, "SGD", earlier or EarlierCredits())


def test_whole_credit_reverses_every_line_and_the_invoice_tax() -> None:
    result = credit(CreditRequest(CreditScope.WHOLE, "billed in error"))
    assert [(line.invoice_line_id, line.amount) for line in result.lines] == [
        ("ln-mrc", Decimal("2180.25")), ("ln-burst", Decimal("189.00")),
        ("ln-adj", Decimal("-10.00")),
    ]
    assert (result.subtotal, result.tax, result.total) == (
        Decimal("2359.25"), Decimal("212.33"), Decimal("2571.58")
    )


def test_lines_credit_is_taxed_like_an_invoice() -> None:
    result = credit(CreditRequest(CreditScope.LINES, "outage", line_ids=["ln-burst"]))
    # 189.00 * 0.09 = 17.01
    assert (result.subtotal, result.tax, result.total) == (
        Decimal("189.00"), Decimal("17.01"), Decimal("206.01")
    )
    assert result.lines[0].description == "Credit of Burst"


def test_partial_credits_never_credit_more_tax_than_charged() -> None:
    # Three amount credits of 0.05 at 9 %: each alone would round 0.0045 -> 0.00, but
    # cumulatively 0.15 * 0.09 = 0.0135 -> 0.01 is credited by the notes together.
    earlier = EarlierCredits()
    taxes = []
    for _ in range(3):
        result = compute_credit(
            CreditRequest(CreditScope.AMOUNT, "goodwill", amount=Decimal("0.05")),
            LINES, SUBTOTAL, RATE, "SGD", earlier,
        )
        taxes.append(result.tax)
        earlier = EarlierCredits(earlier.net + result.subtotal, earlier.tax + result.tax,
                                 {"": earlier.net + result.subtotal}, True)
    assert taxes == [Decimal("0.00"), Decimal("0.01"), Decimal("0.00")]
    # The rest in one WHOLE credit: one line, the remaining net, tax up to the invoice's.
    rest = compute_credit(CreditRequest(CreditScope.WHOLE, "close"), LINES, SUBTOTAL, RATE,
                          "SGD", earlier)
    assert [line.amount for line in rest.lines] == [Decimal("2359.10")]
    assert earlier.tax + rest.tax == Decimal("212.33")


def test_a_credit_beyond_what_is_left_is_refused() -> None:
    earlier = EarlierCredits(Decimal("2300.00"), Decimal("207.00"), {"": Decimal("2300.00")},
                             True)
    with pytest.raises(FailedPrecondition, match=r"59\.25 SGD net still creditable"):
        credit(CreditRequest(CreditScope.AMOUNT, "x", amount=Decimal("60.00")), earlier)
    with pytest.raises(FailedPrecondition, match="more than"):
        credit(CreditRequest(CreditScope.LINES, "x", line_ids=["ln-mrc"]), earlier)
    done = EarlierCredits(SUBTOTAL, Decimal("212.33"), {}, True)
    with pytest.raises(FailedPrecondition, match="nothing is left"):
        credit(CreditRequest(CreditScope.WHOLE, "x"), done)


def test_a_line_credited_once_has_nothing_left() -> None:
    earlier = EarlierCredits(Decimal("189.00"), Decimal("17.01"), {"ln-burst": Decimal("189.00")})
    with pytest.raises(FailedPrecondition, match="nothing left"):
        credit(CreditRequest(CreditScope.LINES, "again", line_ids=["ln-burst"]), earlier)
    whole = credit(CreditRequest(CreditScope.WHOLE, "the rest"), earlier)
    assert whole.subtotal == Decimal("2170.25")
    assert Decimal("17.01") + whole.tax == Decimal("212.33")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (CreditRequest(CreditScope.AMOUNT, " "), "reason"),
        (CreditRequest(CreditScope.AMOUNT, "x"), "amount"),
        (CreditRequest(CreditScope.AMOUNT, "x", amount=Decimal("-1")), "amount"),
        (CreditRequest(CreditScope.AMOUNT, "x", amount=Decimal("1.005")), "amount"),
        (CreditRequest(CreditScope.AMOUNT, "x", amount=Decimal("1"), amount_currency="USD"),
         "amount.currency_code"),
        (CreditRequest(CreditScope.LINES, "x"), "line_ids"),
        (CreditRequest(CreditScope.LINES, "x", line_ids=["ln-nope"]), "line_ids"),
        (CreditRequest(CreditScope.LINES, "x", line_ids=["ln-adj"]), "line_ids"),
        (CreditRequest(CreditScope.LINES, "x", line_ids=["ln-mrc", "ln-mrc"]), "line_ids"),
        (CreditRequest(CreditScope.WHOLE, "x", line_ids=["ln-mrc"]), "line_ids"),
        (CreditRequest(CreditScope.WHOLE, "x", amount=Decimal("1")), "amount"),
    ],
)
def test_bad_requests_name_the_field(request_: CreditRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        credit(request_)
    assert [v.field for v in error.value.violations] == [field]


def _invoice(month: int, total: str, finalized_day: int | None) -> BalanceInvoice:
    finalized = None
    if finalized_day is not None:
        finalized = datetime(2025, month + 1, finalized_day, tzinfo=UTC)
    return BalanceInvoice(f"inv-{month}", BillingMonth(2025, month), Decimal(total), finalized)


def _credit(note: str, month: int, day: int, total: str) -> IssuedCredit:
    return IssuedCredit(note, BillingMonth(2025, month), datetime(2025, month, day, tzinfo=UTC),
                        Decimal(total))


def test_credits_apply_to_the_next_invoice_and_carry_what_is_left() -> None:
    invoices = [_invoice(3, "1000.00", 2), _invoice(4, "300.00", 2), _invoice(5, "900.00", None)]
    # Issued 10 April against March (finalised 2 April): taken by April's invoice (finalised
    # 2 May), which it exceeds: 200.00 carried to May.
    credits = [_credit("cn-1", 4, 10, "500.00")]
    result = balances(invoices, credits)
    assert result["inv-3"].applied == Decimal(0)
    april = result["inv-4"]
    assert (april.credit_note_ids, april.applied, april.amount_due, april.carried_forward) == (
        ["cn-1"], Decimal("300.00"), Decimal("0.00"), Decimal("200.00")
    )
    may = result["inv-5"]
    assert (may.brought_forward, may.applied, may.amount_due, may.carried_forward) == (
        Decimal("200.00"), Decimal("200.00"), Decimal("700.00"), Decimal(0)
    )


def test_a_credit_issued_after_its_month_was_finalised_waits_for_the_next() -> None:
    # April's invoice finalised early (on 20 April): a note of 25 April goes to May.
    invoices = [
        BalanceInvoice("inv-4", BillingMonth(2025, 4), Decimal("300.00"),
                       datetime(2025, 4, 20, tzinfo=UTC)),
        _invoice(5, "900.00", None),
    ]
    result = balances(invoices, [_credit("cn-1", 4, 25, "100.00")])
    assert result["inv-4"].credit_note_ids == []
    assert result["inv-5"].credit_note_ids == ["cn-1"]
    assert result["inv-5"].amount_due == Decimal("800.00")
