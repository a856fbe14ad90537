"""Rating: a customer's month of circuits and usage -> invoice lines and totals.

The rules (DESIGN.md, Invoice), in one place:

* the month is the calendar month in the customer's billing time zone;
* a segment covers the dates from its start up to, not including, its end: the day of an
  activation or a change is charged at the new rate, the day of a disconnect is not;
  ``factor = days covered / days in month``;
* MRC line per segment: ``mrc * factor``; NRC line once, in the month of activation;
* burst line per segment with at least one valid sample: the nearest-rank 95th percentile
  of the samples whose interval starts inside the segment, in whole Mbps rounded up;
  ``burst_price * max(0, p95 - cir) * factor``;
* a disconnect before the term's end adds an early-termination line in the month of the
  disconnect (domain/termination.py);
* a boost adds one line per month: ``boost_price_per_mbps_hour * added Mbps * the started
  hours of its billed time that start in the month``, and its added rate is taken off the
  samples it was in force for before the burst percentile (domain/boosts.py);
* every line is computed exactly and rounded once, half-up, to the currency's minor unit;
  subtotal = sum of the rounded lines; tax = rate * subtotal, half-up; total = subtotal + tax.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Protocol
from zoneinfo import ZoneInfo

from services.billing.domain.boosts import Boost, without_boosts
from services.billing.domain.contracts import Segment
from services.billing.domain.money import EXACT, FACTOR_DISPLAY, round_money
from services.billing.domain.percentile import (
    PercentileResult,
    Sample,
    expected_intervals,
    nearest_rank_p95,
)
from services.billing.domain.termination import (
    remaining_whole_months,
    term_end,
    termination_fee,
)
from services.common.errors import FailedPrecondition, InvalidArgument


class LineKind(enum.IntEnum):
    # Values follow idc.billing.v1.InvoiceLineKind, which is also the order of lines.
    MRC = 1
    NRC = 2
    BURST = 3
    ADJUSTMENT = 4
    TERMINATION = 5
    BOOST = 6


@dataclass(frozen=True, order=True)
class BillingMonth:
    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise InvalidArgument.for_field("month.month", f"{self.month} is not 1 to 12")
        if not 2000 <= self.year <= 9999:
            raise InvalidArgument.for_field("month.year", f"{self.year} is not a billing year")

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def next(self) -> BillingMonth:
        if self.month == 12:
            return BillingMonth(self.year + 1, 1)
        return BillingMonth(self.year, self.month + 1)

    @property
    def previous(self) -> BillingMonth:
        if self.month == 1:
            return BillingMonth(self.year - 1, 12)
        return BillingMonth(self.year, self.month - 1)

    @property
    def days(self) -> int:
        return (self.next.first_day - self.first_day).days

    def window(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """The month as UTC instants [start, end) in the given time zone."""
        return _midnight(self.first_day, zone), _midnight(self.next.first_day, zone)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class BurstEvidence:
    samples_expected: int
    samples_present: int
    samples_discarded: int
    billed_sample_mbps: int
    billed_sample_time: datetime
    billed_direction: str
    billed_sample_bps: Fraction
    cir_mbps: int
    overage_mbps: int
    # Intervals of the segment with no sample because the meter missed polls (their
    # octets are a gap volume: counted in volumes, never in the percentile).
    intervals_lost: int = 0
    # Samples of the segment that started while a boost was in force: the boost's added
    # rate was taken off them before the percentile (domain/boosts.py).
    samples_in_boost: int = 0


@dataclass(frozen=True)
class BoostEvidence:
    boost_id: str
    base_mbps: int
    boosted_mbps: int
    booked_start: datetime
    booked_end: datetime
    # The time both booked and in force, over all months.
    billed_start: datetime
    billed_end: datetime
    # Started hours of the billed time that start in the line's month (its quantity).
    started_hours: int

    @property
    def added_mbps(self) -> int:
        return self.boosted_mbps - self.base_mbps


@dataclass(frozen=True)
class Line:
    """One invoice line; ``key`` identifies it across re-runs of the month."""

    key: str
    kind: LineKind
    circuit_id: str
    description: str
    segment_start: datetime
    segment_end: datetime
    days_covered: int
    days_in_month: int
    factor: Decimal
    unit_price: Decimal
    bandwidth_mbps: int
    amount: Decimal
    burst: BurstEvidence | None = None
    boost: BoostEvidence | None = None
    adjusts_invoice_id: str = ""
    adjusts_line_key: str = ""
    # The circuit's two ends disagree beyond the tolerance: what they measured (evidence
    # only, never a change to the amount); empty when they agree.
    reconciliation: str = ""


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    tax: Decimal
    total: Decimal


class Usage(Protocol):
    """A circuit's usage in a month, asked segment by segment."""

    def percentile(self, start: datetime, end: datetime) -> PercentileResult | None:
        """The 95th percentile of the valid samples starting in [start, end)."""
        ...


@dataclass(frozen=True)
class ScannedUsage:
    """Usage from the samples themselves, less the boosts' added rate while in force."""

    samples: Sequence[Sample]
    boosts: Sequence[Boost] = ()

    def percentile(self, start: datetime, end: datetime) -> PercentileResult | None:
        inside = [s for s in self.samples if start <= s.interval_start < end]
        return nearest_rank_p95(without_boosts(inside, self.boosts))

    def samples_in_boost(self, start: datetime, end: datetime) -> int:
        if not self.boosts:
            return 0
        return sum(
            start <= s.interval_start < end and s.valid
            and any(b.in_force_at(s.interval_start) for b in self.boosts)
            for s in self.samples
        )


def boosted_in(boosts: Sequence[Boost], month: BillingMonth, zone: ZoneInfo) -> bool:
    """Was any of the boosts in force in the month? Then its burst is rated from samples."""
    return any(b.in_force_during(*month.window(zone)) for b in boosts)


def rate_circuit(
    segments: Sequence[Segment],
    usage: Usage | Sequence[Sample],
    month: BillingMonth,
    zone: ZoneInfo,
    currency: str,
    boosts: Sequence[Boost] = (),
) -> list[Line]:
    """The lines of one circuit for one month from its usage (or its month's samples, which
    a month with a boost in force needs: the boost lowers them)."""
    if isinstance(usage, Sequence):
        usage = ScannedUsage(usage, boosts)
    elif boosted_in(boosts, month, zone):
        raise TypeError("a month with a boost in force is rated from its samples")
    month_start, month_end = month.window(zone)
    lines: list[Line] = []
    for segment in segments:
        if not segment.overlaps(month_start, month_end):
            continue
        _check_currency(segment, currency)
        start = max(segment.start, month_start)
        end = month_end if segment.end is None else min(segment.end, month_end)
        days = (end.astimezone(zone).date() - start.astimezone(zone).date()).days
        context = _SegmentContext(segment, start, end, days, month.days, zone)
        activated_this_month = segment.activation and month_start <= segment.start < month_end
        if activated_this_month and segment.price.nrc:
            lines.append(_nrc_line(context))
        if days <= 0:
            continue
        lines.append(_mrc_line(context))
        in_boost = usage.samples_in_boost(start, end) if isinstance(usage, ScannedUsage) else 0
        burst = _burst_line(context, usage.percentile(start, end), in_boost)
        if burst is not None:
            lines.append(burst)
    for boost in boosts:
        line = _boost_line(boost, month, zone, currency)
        if line is not None:
            lines.append(line)
    termination = _termination_line(segments, month, zone, currency)
    if termination is not None:
        lines.append(termination)
    return lines


def _check_currency(segment: Segment, currency: str) -> None:
    if segment.price.currency != currency:
        raise FailedPrecondition(
            f"circuit {segment.circuit_id} is priced in {segment.price.currency} but its "
            f"customer {segment.tenant_id} is invoiced in {currency}: fix the customer's "
            "currency in the billing entities file or the circuit's price terms"
        )


def _termination_line(
    segments: Sequence[Segment], month: BillingMonth, zone: ZoneInfo, currency: str
) -> Line | None:
    """The early-termination line of a circuit disconnected in ``month`` before its term
    ends (the last segment's end is the disconnect; the term runs from the activation)."""
    last = segments[-1] if segments else None
    month_start, month_end = month.window(zone)
    if last is None or last.end is None or not month_start <= last.end < month_end:
        return None
    activation = next((s for s in reversed(segments) if s.activation), None)
    price = last.price
    if activation is None or not price.termination_share or price.term_months <= 0:
        return None
    _check_currency(last, currency)
    started = activation.start.astimezone(zone).date()
    disconnected = last.end.astimezone(zone).date()
    months = remaining_whole_months(started, price.term_months, disconnected)
    if months == 0:
        return None
    ends = term_end(started, price.term_months).isoformat()
    return Line(
        key=f"{last.circuit_id}/{LineKind.TERMINATION.name}/{last.end.isoformat()}",
        kind=LineKind.TERMINATION,
        circuit_id=last.circuit_id,
        description=(
            f"Early termination {disconnected.isoformat()}: {months} remaining whole months "
            f"of the {price.term_months}-month term to {ends} x MRC {price.mrc:f} "
            f"x share {price.termination_share:f}"
        ),
        segment_start=last.end,
        segment_end=last.end,
        days_covered=0,
        days_in_month=month.days,
        factor=Decimal(months) * price.termination_share,
        unit_price=price.mrc,
        bandwidth_mbps=last.bandwidth_mbps,
        amount=termination_fee(months, price.mrc, price.termination_share, currency),
    )


@dataclass(frozen=True)
class _SegmentContext:
    segment: Segment
    start: datetime
    end: datetime
    days: int
    days_in_month: int
    zone: ZoneInfo

    @property
    def currency(self) -> str:
        return self.segment.price.currency

    @property
    def period(self) -> str:
        # Both ends inclusive, as a customer reads dates: the end instant is not covered.
        first = self.start.astimezone(self.zone).date()
        last = max(first, self.end.astimezone(self.zone).date() - timedelta(days=1))
        return f"{first.isoformat()} to {last.isoformat()}"

    def key(self, kind: LineKind) -> str:
        return f"{self.segment.circuit_id}/{kind.name}/{self.start.isoformat()}"

    def factor(self) -> Decimal:
        if self.days == self.days_in_month:
            return Decimal(1)
        return FACTOR_DISPLAY.divide(Decimal(self.days), Decimal(self.days_in_month))

    def prorate(self, monthly: Decimal) -> Decimal:
        # One division at the end keeps the product exact before the single rounding.
        exact = EXACT.divide(EXACT.multiply(monthly, Decimal(self.days)), self.days_in_month)
        return round_money(exact, self.currency)


def _mrc_line(context: _SegmentContext) -> Line:
    segment = context.segment
    return Line(
        key=context.key(LineKind.MRC),
        kind=LineKind.MRC,
        circuit_id=segment.circuit_id,
        description=(
            f"MRC {segment.bandwidth_mbps} Mbps {segment.price.term_months} months, "
            f"{context.period}"
        ),
        segment_start=context.start,
        segment_end=context.end,
        days_covered=context.days,
        days_in_month=context.days_in_month,
        factor=context.factor(),
        unit_price=segment.price.mrc,
        bandwidth_mbps=segment.bandwidth_mbps,
        amount=context.prorate(segment.price.mrc),
    )


def _nrc_line(context: _SegmentContext) -> Line:
    segment = context.segment
    activated = segment.start.astimezone(context.zone).date().isoformat()
    return Line(
        key=context.key(LineKind.NRC),
        kind=LineKind.NRC,
        circuit_id=segment.circuit_id,
        description=f"NRC installation {segment.bandwidth_mbps} Mbps, activated {activated}",
        segment_start=context.start,
        segment_end=context.end,
        days_covered=context.days,
        days_in_month=context.days_in_month,
        factor=Decimal(1),
        unit_price=segment.price.nrc,
        bandwidth_mbps=segment.bandwidth_mbps,
        amount=round_money(segment.price.nrc, context.currency),
    )


def _burst_line(
    context: _SegmentContext, result: PercentileResult | None, samples_in_boost: int = 0
) -> Line | None:
    if result is None:
        return None
    segment = context.segment
    cir = segment.bandwidth_mbps
    billed = result.billed
    overage = max(0, result.billable_mbps - cir)
    price = segment.price.burst_price_per_mbps
    return Line(
        key=context.key(LineKind.BURST),
        kind=LineKind.BURST,
        circuit_id=segment.circuit_id,
        description=(
            f"Burst 95th percentile {result.billable_mbps} Mbps ({result.billed_direction}) "
            f"over CIR {cir} Mbps: {overage} Mbps, {context.period}"
        ),
        segment_start=context.start,
        segment_end=context.end,
        days_covered=context.days,
        days_in_month=context.days_in_month,
        factor=context.factor(),
        unit_price=price,
        bandwidth_mbps=cir,
        amount=context.prorate(EXACT.multiply(price, Decimal(overage))),
        burst=BurstEvidence(
            samples_expected=expected_intervals(context.start, context.end),
            samples_present=result.samples_present,
            samples_discarded=result.samples_discarded,
            billed_sample_mbps=result.billable_mbps,
            billed_sample_time=billed.sample.interval_start,
            billed_direction=result.billed_direction,
            billed_sample_bps=billed.rate_bps,
            cir_mbps=cir,
            overage_mbps=overage,
            samples_in_boost=samples_in_boost,
        ),
    )


def _boost_line(
    boost: Boost, month: BillingMonth, zone: ZoneInfo, currency: str
) -> Line | None:
    """The boost's line in ``month``: the started hours of its billed time that begin in
    the month (none: no line)."""
    month_start, month_end = month.window(zone)
    hours = boost.hours_starting(month_start, month_end)
    if hours == 0:
        return None
    if boost.currency != currency:
        raise FailedPrecondition(
            f"boost {boost.boost_id} of circuit {boost.circuit_id} is priced in "
            f"{boost.currency} but its customer is invoiced in {currency}"
        )
    price = boost.price_per_mbps_hour
    added = boost.added_mbps
    whole = boost.started_hours
    share = "" if hours == whole else f" ({hours} of its {whole} start in the month)"
    return Line(
        key=f"{boost.circuit_id}/{LineKind.BOOST.name}/{boost.boost_id}",
        kind=LineKind.BOOST,
        circuit_id=boost.circuit_id,
        description=(
            f"Boost +{added} Mbps ({boost.base_mbps} to {boost.boosted_mbps} Mbps), "
            f"{_local(boost.billed_start, zone)} to {_local(boost.billed_end, zone)}: "
            f"{hours} started hours x {added} Mbps{share}"
        ),
        segment_start=max(boost.billed_start, month_start),
        segment_end=min(boost.billed_end, month_end),
        days_covered=0,
        days_in_month=month.days,
        factor=Decimal(hours),
        unit_price=price,
        bandwidth_mbps=boost.boosted_mbps,
        # Exact product, one rounding.
        amount=round_money(EXACT.multiply(EXACT.multiply(price, Decimal(added)),
                                          Decimal(hours)), currency),
        boost=BoostEvidence(
            boost_id=boost.boost_id, base_mbps=boost.base_mbps,
            boosted_mbps=boost.boosted_mbps, booked_start=boost.start_time,
            booked_end=boost.end_time, billed_start=boost.billed_start,
            billed_end=boost.billed_end, started_hours=hours,
        ),
    )


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def sort_lines(lines: Iterable[Line]) -> list[Line]:
    """Lines by circuit, segment start, kind (the invoice's order)."""
    return sorted(lines, key=lambda x: (x.circuit_id, x.segment_start, x.kind, x.key))


def totals(lines: Iterable[Line], tax_rate: Decimal, currency: str) -> Totals:
    subtotal = sum((line.amount for line in lines), Decimal(0))
    subtotal = round_money(subtotal, currency)
    tax = round_money(EXACT.multiply(subtotal, tax_rate), currency)
    return Totals(subtotal=subtotal, tax=tax, total=subtotal + tax)


def adjustment_lines(
    original_invoice_id: str,
    original_label: str,
    original_lines: Mapping[str, Line],
    billed_so_far: Mapping[str, Decimal],
    recomputed: Sequence[Line],
) -> list[Line]:
    """Corrections of a finalised invoice: for each line, what it should be now minus what
    was billed (the original amount plus earlier adjustments). No line for no difference."""
    now = {line.key: line for line in recomputed}
    adjustments: list[Line] = []
    for key in sorted(set(now) | set(original_lines)):
        correct = now[key].amount if key in now else Decimal(0)
        difference = correct - billed_so_far.get(key, Decimal(0))
        if not difference:
            continue
        basis = now.get(key) or original_lines[key]
        adjustments.append(
            replace(
                basis,
                key=f"ADJUSTMENT/{original_invoice_id}/{key}",
                kind=LineKind.ADJUSTMENT,
                description=f"Adjustment to invoice {original_label}: {basis.description}",
                amount=difference,
                adjusts_invoice_id=original_invoice_id,
                adjusts_line_key=key,
            )
        )
    return adjustments
