"""Reconciliation of a circuit's two ends per month (arithmetic in domain/reconciliation.py).

The billed end is the one of the customer's billing entity's telco (domain/ends.py); the
other end is compared with it. Volumes come from one aggregate query per customer plus
the gap volumes; the percentiles are scanned only for circuits sampled at both ends (an
end with no samples has no percentile to compare).

``IDC_BILLING_RECONCILE_TOLERANCE_PERCENT`` (default 1) is how far apart, in percent of
the billed end, the two ends' volumes and p95 may be before it is a difference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from services.billing import metrics
from services.billing.domain.contracts import ContractChange, Segment, build_segments
from services.billing.domain.ends import Side, billed_side
from services.billing.domain.entities import BillingDirectory, Customer
from services.billing.domain.percentile import Sample
from services.billing.domain.rating import BillingMonth
from services.billing.domain.reconciliation import (
    EndUsage,
    GapVolume,
    Reconciliation,
    end_usage,
    intervals_lost,
    parse_tolerance,
    reconcile,
)
from services.common.config import ConfigError
from services.common.errors import InvalidArgument

TOLERANCE_ENV = "IDC_BILLING_RECONCILE_TOLERANCE_PERCENT"
DEFAULT_TOLERANCE = Decimal("1")


def tolerance_from_env(env: Mapping[str, str] | None = None) -> Decimal:
    raw = (os.environ if env is None else env).get(TOLERANCE_ENV, "").strip()
    if not raw:
        return DEFAULT_TOLERANCE
    try:
        return parse_tolerance(raw, TOLERANCE_ENV)
    except InvalidArgument as error:
        raise ConfigError(error.message) from None


class EndsStore(Protocol):
    """What reconciliation reads (SqlBillingStore in production)."""

    def changes(self, as_of: datetime) -> dict[str, list[ContractChange]]: ...

    def samples(
        self, circuit_id: str, start: datetime, end: datetime, as_of: datetime,
        side: Side = Side.SINGAPORE,
    ) -> list[Sample]: ...

    def gaps(
        self, circuit_ids: Sequence[str], start: datetime, end: datetime,
        as_of: datetime | None = None,
    ) -> dict[tuple[str, Side], list[GapVolume]]: ...

    def end_totals(
        self, circuit_ids: Sequence[str], start: datetime, end: datetime, as_of: datetime
    ) -> dict[tuple[str, Side], tuple[int, int, int]]: ...


class Reconciler:
    def __init__(
        self,
        store: EndsStore,
        directory: BillingDirectory,
        tolerance_percent: Decimal = DEFAULT_TOLERANCE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._directory = directory
        self.tolerance_percent = tolerance_percent
        self._clock = clock

    def circuits(
        self, customer: Customer, circuit_ids: Sequence[str], month: BillingMonth,
        as_of: datetime,
    ) -> dict[str, Reconciliation]:
        """The customer's circuits reconciled over ``month`` (its billing time zone)."""
        if not circuit_ids:
            return {}
        start, end = month.window(customer.time_zone)
        gaps = self._store.gaps(circuit_ids, start, end, as_of)
        totals = self._store.end_totals(circuit_ids, start, end, as_of)
        billed = billed_side(customer.entity)
        result: dict[str, Reconciliation] = {}
        for circuit_id in sorted(circuit_ids):
            both_sampled = all((circuit_id, side) in totals for side in Side)

            def usage(side: Side, circuit: str = circuit_id, scan: bool = both_sampled) -> EndUsage:
                gap_list = gaps.get((circuit, side), [])
                if scan:
                    samples = self._store.samples(circuit, start, end, as_of, side)
                    return end_usage(side, samples, gap_list, start, end)
                bytes_in, bytes_out, count = totals.get((circuit, side), (0, 0, 0))
                valid = [g for g in gap_list if g.valid]
                return EndUsage(
                    side=side,
                    bytes_in=bytes_in + sum(g.bytes_in for g in valid),
                    bytes_out=bytes_out + sum(g.bytes_out for g in valid),
                    samples=count,
                    intervals_lost=intervals_lost(gap_list, start, end),
                    p95_mbps=None,
                )

            result[circuit_id] = reconcile(
                circuit_id, customer.tenant_id, month, usage(billed), usage(billed.other),
                self.tolerance_percent,
            )
        return result

    def report(
        self, month: BillingMonth, tenant_id: str | None = None, as_of: datetime | None = None
    ) -> list[Reconciliation]:
        """Every circuit with a segment in ``month`` (of one tenant, or all), reconciled."""
        as_of = as_of or self._clock()
        by_tenant: dict[str, list[str]] = {}
        for circuit_id, changes in self._store.changes(as_of).items():
            segments = build_segments(changes)
            if not segments:
                continue
            tenant = segments[-1].tenant_id
            if tenant_id and tenant != tenant_id:
                continue
            customer = self._directory.customer(tenant)
            if _active(segments, month, customer):
                by_tenant.setdefault(tenant, []).append(circuit_id)
        report: list[Reconciliation] = []
        for tenant in sorted(by_tenant):
            customer = self._directory.customer(tenant)
            report += self.circuits(customer, by_tenant[tenant], month, as_of).values()
        metrics.record_reconciliation(month, report)
        return report


def _active(segments: Sequence[Segment], month: BillingMonth, customer: Customer) -> bool:
    start, end = month.window(customer.time_zone)
    return any(segment.overlaps(start, end) for segment in segments)
