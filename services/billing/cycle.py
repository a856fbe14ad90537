"""The billing application: month-end runs, finalisation, and who may read what.

What happens in a run (RunBillingCycle), in order:

1. take the contracts (circuit changes) received up to the cut-off and group circuits by
   customer; keep the customers of the requested billing entity and tenants;
2. per customer: rate every circuit with a segment in the month (rating.rate_circuit)
   over the valid usage received up to the cut-off: from the usage peaks kept as samples
   arrived (domain/peaks.py) where they stand for exactly those samples, otherwise from
   the samples themselves (a change splitting the month's samples, a cut-off earlier than
   some of them, a customer time zone changed, a boost in force in the month); its boosts
   (raises and reverts received up to the cut-off) add their BOOST lines; then, for each
   of the customer's finalised invoices of earlier months that got usage or changes after
   their own cut-off, rate that month again and add the differences as ADJUSTMENT lines;
   then reconcile the other end of each circuit against the billed one (reconcile.py): a
   difference beyond the tolerance is a warning on the run and evidence on the circuit's
   MRC and burst lines, never a change to an amount; burst lines also show the intervals
   of the segment lost to meter gaps;
3. write the invoice in its own transaction: created, or recomputed in place while DRAFT
   (same id), never touched once FINALIZED. A crash leaves whole invoices only; the run
   record stays unfinished, and a rerun completes the month on the same ids.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Protocol

from services.billing.domain.boosts import BoostChange, build_boosts
from services.billing.domain.close import CloseWarning, WarningKind
from services.billing.domain.contracts import Segment, build_segments
from services.billing.domain.ends import billed_side
from services.billing.domain.entities import BillingDirectory, Customer
from services.billing.domain.peaks import KeptMonth, NeedsScan, usable
from services.billing.domain.rating import (
    BillingMonth,
    Line,
    LineKind,
    adjustment_lines,
    boosted_in,
    rate_circuit,
    sort_lines,
    totals,
)
from services.billing.domain.reconciliation import GapVolume, Reconciliation, intervals_lost
from services.billing.invoices import (
    InvoiceDraft,
    SaveOutcome,
    StoredInvoice,
    invoice_id_for,
)
from services.billing.metrics import RUN_DURATION, record_reconciliation
from services.billing.reconcile import DEFAULT_TOLERANCE, EndsStore, Reconciler
from services.common.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)


class BillingStore(EndsStore, Protocol):
    """What a run needs from storage (SqlBillingStore in production): the reads of both
    ends (EndsStore), and these."""

    def kept_months(self, month: BillingMonth) -> dict[str, list[KeptMonth]]: ...

    def boosts(self, as_of: datetime) -> dict[str, list[BoostChange]]: ...

    def news_since(
        self, circuit_ids: Sequence[str], start: datetime, end: datetime,
        after: datetime, until: datetime,
    ) -> bool: ...

    def conflicts_between(self, start: datetime, end: datetime) -> list[tuple[str, datetime]]: ...

    def tenants_with_changes(self, tenant_ids: Sequence[str], as_of: datetime) -> set[str]: ...

    def tenants_with_finalized_before(self, month: BillingMonth) -> set[str]: ...

    def finalized_before(self, tenant_id: str, month: BillingMonth) -> list[StoredInvoice]: ...

    def billed_so_far(
        self, invoice: StoredInvoice, excluding_invoice_id: str
    ) -> dict[str, Decimal]: ...

    def save(
        self, draft: InvoiceDraft, run_id: str, as_of: datetime, now: datetime
    ) -> SaveOutcome: ...

    def start_run(
        self, run_id: str, month: BillingMonth, entity_id: str, as_of: datetime, now: datetime
    ) -> None: ...

    def finish_run(self, run_id: str, summary: dict[str, object], now: datetime) -> None: ...


@dataclass(frozen=True)
class CycleRequest:
    month: BillingMonth
    billing_entity_id: str = ""
    as_of: datetime | None = None
    tenant_ids: Sequence[str] = ()
    dry_run: bool = False


@dataclass(frozen=True)
class Progress:
    stage: str  # "SEGMENTING", "RATING", "INVOICING", "DONE"
    circuits_total: int = 0
    circuits_done: int = 0
    invoices_total: int = 0
    invoices_done: int = 0
    message: str = ""


@dataclass
class Summary:
    run_id: str
    month: BillingMonth
    billing_entity_id: str
    as_of: datetime
    dry_run: bool
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_finalized: int = 0
    adjustment_lines: int = 0
    circuits_billed: int = 0
    # Rated from the samples rather than the kept peaks (see the module docstring).
    circuits_scanned: int = 0
    invoice_ids: list[str] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)
    warnings: list[CloseWarning] = field(default_factory=list)
    # Circuits whose two ends differ beyond the tolerance (also among the warnings).
    reconciliation_differences: list[Reconciliation] = field(default_factory=list)

    def as_record(self) -> dict[str, object]:
        return {
            "created": self.created, "updated": self.updated, "unchanged": self.unchanged,
            "skipped_finalized": self.skipped_finalized,
            "adjustment_lines": self.adjustment_lines, "circuits_billed": self.circuits_billed,
            "circuits_scanned": self.circuits_scanned,
            "invoice_ids": self.invoice_ids,
            "totals": {k: f"{v:f}" for k, v in self.totals.items()},
            "warnings": [
                {"kind": w.kind.value, "subject": w.subject, "message": w.message}
                for w in self.warnings
            ],
            "reconciliation_differences": [
                r.describe() for r in self.reconciliation_differences
            ],
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


class BillingCycle:
    def __init__(
        self,
        store: BillingStore,
        directory: BillingDirectory,
        clock: Callable[[], datetime] = utcnow,
        tolerance_percent: Decimal = DEFAULT_TOLERANCE,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self.reconciler = Reconciler(store, directory, tolerance_percent, clock)

    def check(self, request: CycleRequest) -> datetime:
        """The run's cut-off, after checking what a run would otherwise find out late:
        a cut-off in the future, an unknown entity, tenants with no circuit (NOT_FOUND
        naming them, rather than a run that bills nobody and says OK), tenants of another
        entity than the one asked for."""
        now = self._clock()
        as_of = request.as_of or now
        if as_of > now:
            raise InvalidArgument.for_field("as_of_time", "must not be in the future")
        entity = request.billing_entity_id
        if entity:
            self._directory.entity(entity)  # NOT_FOUND names the known ones
        wanted = sorted(set(request.tenant_ids))
        if not wanted:
            return as_of
        known = self._store.tenants_with_changes(wanted, as_of)
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise NotFound(
                f"no circuit of tenant(s) {', '.join(unknown)} is known to billing as of "
                f"{as_of.isoformat()}: check the tenant ids"
            )
        elsewhere = [
            f"{t} (billed by {self._directory.customer(t).entity.id})" for t in wanted
            if entity and self._directory.customer(t).entity.id != entity
        ]
        if elsewhere:
            raise InvalidArgument.for_field(
                "tenant_ids", f"not customers of {entity}: {', '.join(elsewhere)}"
            )
        return as_of

    def run(self, request: CycleRequest) -> Iterator[Progress | Summary]:
        now = self._clock()
        as_of = self.check(request)
        summary = Summary(
            run_id="run-" + str(uuid.uuid4()), month=request.month,
            billing_entity_id=request.billing_entity_id, as_of=as_of, dry_run=request.dry_run,
        )
        if not request.dry_run:
            self._store.start_run(
                summary.run_id, request.month, request.billing_entity_id, as_of, now
            )
        yield Progress("SEGMENTING", message=f"contracts as of {as_of.isoformat()}")
        customers = self._customers(request, as_of)
        circuits_total = sum(len(c) for _, c in customers)
        yield Progress("RATING", circuits_total=circuits_total, invoices_total=len(customers))
        circuits_done = invoices_done = 0
        reads = _RunReads(self._store, request.month, as_of)
        for customer, circuits in customers:
            try:
                draft = self._draft(customer, circuits, request.month, reads, summary)
            except DomainError as error:
                summary.warnings.append(CloseWarning(
                    WarningKind.NOT_INVOICED, customer.tenant_id,
                    f"customer {customer.tenant_id} not invoiced: {error}",
                ))
                log.warning("billing %s for %s: %s", request.month, customer.tenant_id, error)
                draft = None
            circuits_done += len(circuits)
            if draft is not None:
                self._record(draft, summary, as_of)
            invoices_done += 1
            yield Progress(
                "INVOICING", circuits_total, circuits_done, len(customers), invoices_done,
                message=customer.tenant_id,
            )
        if not request.dry_run:
            record_reconciliation(request.month, summary.reconciliation_differences)
            self._store.finish_run(summary.run_id, summary.as_record(), self._clock())
        RUN_DURATION.record((self._clock() - now).total_seconds())
        yield Progress("DONE", circuits_total, circuits_done, len(customers), invoices_done)
        yield summary

    def _customers(
        self, request: CycleRequest, as_of: datetime
    ) -> list[tuple[Customer, dict[str, list[Segment]]]]:
        by_tenant: dict[str, dict[str, list[Segment]]] = defaultdict(dict)
        for circuit_id, changes in self._store.changes(as_of).items():
            segments = build_segments(changes)
            if segments:
                by_tenant[segments[-1].tenant_id][circuit_id] = segments
        wanted = set(request.tenant_ids)
        chosen = []
        for tenant_id in sorted(by_tenant):
            customer = self._directory.customer(tenant_id)
            if wanted and tenant_id not in wanted:
                continue
            if request.billing_entity_id and customer.entity.id != request.billing_entity_id:
                continue
            chosen.append((customer, by_tenant[tenant_id]))
        return chosen

    def _draft(
        self,
        customer: Customer,
        circuits: Mapping[str, list[Segment]],
        month: BillingMonth,
        reads: _RunReads,
        summary: Summary,
    ) -> InvoiceDraft | None:
        invoice_id = invoice_id_for(customer.tenant_id, month)
        start, end = month.window(customer.time_zone)
        active = {c: s for c, s in circuits.items() if any(x.overlaps(start, end) for x in s)}
        currency = _currency(customer, active, circuits)
        lines = self._rate(customer, active, month, reads, currency, summary)
        lines = self._reconcile(customer, sorted(active), month, reads.as_of, lines, summary)
        summary.circuits_billed += len(active)
        conflicts = sum(
            start <= interval < end for c in active for interval in reads.conflicts.get(c, ())
        )
        if conflicts:
            summary.warnings.append(CloseWarning(
                WarningKind.USAGE_CONFLICT, customer.tenant_id,
                f"customer {customer.tenant_id}: {conflicts} conflicting usage report(s) set "
                "aside in the month (first report billed)",
            ))
        summary.warnings += _unsampled(customer, active, lines, month)
        if active and not customer.configured:
            summary.warnings.append(CloseWarning(
                WarningKind.UNKNOWN_TENANT, customer.tenant_id,
                f"tenant {customer.tenant_id} is not in the billing entities file: billed by "
                f"{customer.entity.id} under its tenant id, without an address",
            ))
        adjustments = self._adjustments(customer, circuits, month, reads, invoice_id, currency)
        summary.adjustment_lines += len(adjustments)
        if not active and not adjustments:
            return None
        all_lines = sort_lines([*lines, *adjustments])
        return InvoiceDraft(
            id=invoice_id, customer=customer, month=month, currency=currency,
            lines=all_lines, totals=totals(all_lines, customer.entity.tax_rate, currency),
        )

    def _reconcile(
        self, customer: Customer, circuit_ids: Sequence[str], month: BillingMonth,
        as_of: datetime, lines: list[Line], summary: Summary,
    ) -> list[Line]:
        """The lines with the evidence of circuits whose two ends differ, and a warning for
        each; circuits with no usage at all at the other end (not metered there) are one
        warning per customer, neither evidence nor a difference entry (nothing to compare
        the bill with, and a one-ended meter would flag every circuit)."""
        reconciled = self.reconciler.circuits(customer, circuit_ids, month, as_of)
        outside = {c: r for c, r in reconciled.items() if not r.within_tolerance}
        one_ended = sorted(c for c, r in outside.items() if not r.other.metered)
        if one_ended:
            summary.warnings.append(CloseWarning(
                WarningKind.RECONCILIATION_DIFFERENCE, customer.tenant_id,
                f"customer {customer.tenant_id}: {len(one_ended)} circuit(s) have no usage at "
                f"the {billed_side(customer.entity).other.name.lower()} end in the month, so "
                f"they are not reconciled ({', '.join(one_ended[:5])}"
                f"{', ...' if len(one_ended) > 5 else ''})",
            ))
        differing = {c: r for c, r in outside.items() if r.other.metered}
        for _, reconciliation in sorted(differing.items()):
            summary.reconciliation_differences.append(reconciliation)
            summary.warnings.append(CloseWarning(
                WarningKind.RECONCILIATION_DIFFERENCE, reconciliation.circuit_id,
                f"customer {customer.tenant_id}: {reconciliation.describe()}",
            ))
        return [
            replace(line, reconciliation=differing[line.circuit_id].describe())
            if line.circuit_id in differing and line.kind in (LineKind.MRC, LineKind.BURST)
            else line
            for line in lines
        ]

    def _rate(
        self,
        customer: Customer,
        circuits: Mapping[str, list[Segment]],
        month: BillingMonth,
        reads: _RunReads,
        currency: str,
        summary: Summary | None = None,
    ) -> list[Line]:
        zone = customer.time_zone
        side = billed_side(customer.entity)
        kept = reads.kept(month)
        start, end = month.window(zone)
        gaps = self._store.gaps(sorted(circuits), start, end, reads.as_of)
        lines: list[Line] = []
        for circuit_id in sorted(circuits):
            segments = circuits[circuit_id]
            boosts = build_boosts(reads.boosts.get(circuit_id, ()), segments[-1].end)
            state = usable(kept.get(circuit_id, ()), zone.key, month, reads.as_of)
            rated: list[Line] | None = None
            # A boost lowers the samples it was in force for: the kept peaks cannot say.
            if state is not None and not boosted_in(boosts, month, zone):
                with contextlib.suppress(NeedsScan):
                    rated = rate_circuit(segments, state, month, zone, currency, boosts)
            if rated is None:
                if summary is not None:
                    summary.circuits_scanned += 1
                samples = self._store.samples(circuit_id, start, end, reads.as_of, side)
                rated = rate_circuit(segments, samples, month, zone, currency, boosts)
            lines += _with_gaps(rated, gaps.get((circuit_id, side), []))
        return lines

    def _adjustments(
        self,
        customer: Customer,
        circuits: Mapping[str, list[Segment]],
        month: BillingMonth,
        reads: _RunReads,
        invoice_id: str,
        currency: str,
    ) -> list[Line]:
        if customer.tenant_id not in reads.finalized_tenants:
            return []
        adjustments: list[Line] = []
        for original in self._store.finalized_before(customer.tenant_id, month):
            start, end = original.month.window(customer.time_zone)
            billed_circuits = sorted(
                {s.line.circuit_id for s in original.lines}
                | {c for c, segs in circuits.items() if any(x.overlaps(start, end) for x in segs)}
            )
            if not billed_circuits or not self._store.news_since(
                billed_circuits, start, end, original.as_of_time, reads.as_of
            ):
                continue
            if original.currency != currency:
                raise FailedPrecondition(
                    f"invoice {original.label} is in {original.currency}, "
                    f"this month in {currency}"
                )
            then = {c: circuits[c] for c in billed_circuits if c in circuits}
            recomputed = self._rate(customer, then, original.month, reads, currency)
            own_lines = {
                s.line.key: s.line for s in original.lines if not s.line.adjusts_invoice_id
            }
            adjustments += adjustment_lines(
                original.id, original.label, own_lines,
                self._store.billed_so_far(original, invoice_id), recomputed,
            )
        return adjustments

    def _record(self, draft: InvoiceDraft, summary: Summary, as_of: datetime) -> None:
        summary.invoice_ids.append(draft.id)
        summary.totals[draft.currency] = (
            summary.totals.get(draft.currency, Decimal(0)) + draft.totals.total
        )
        if summary.dry_run:
            return
        outcome = self._store.save(draft, summary.run_id, as_of, self._clock())
        if outcome is SaveOutcome.CREATED:
            summary.created += 1
        elif outcome is SaveOutcome.UPDATED:
            summary.updated += 1
        elif outcome is SaveOutcome.UNCHANGED:
            summary.unchanged += 1
        else:
            summary.skipped_finalized += 1


class _RunReads:
    """What a run reads once for all its customers instead of once per customer."""

    def __init__(self, store: BillingStore, month: BillingMonth, as_of: datetime) -> None:
        self.as_of = as_of
        self._store = store
        self._kept: dict[BillingMonth, dict[str, list[KeptMonth]]] = {}
        # A day either side holds the month in every time zone (offsets are under 15 h).
        first = datetime.combine(month.first_day, time(0), UTC) - timedelta(days=1)
        last = datetime.combine(month.next.first_day, time(0), UTC) + timedelta(days=1)
        self.conflicts: dict[str, list[datetime]] = defaultdict(list)
        for circuit_id, interval_start in store.conflicts_between(first, last):
            self.conflicts[circuit_id].append(interval_start)
        self.finalized_tenants = store.tenants_with_finalized_before(month)
        self.boosts = store.boosts(as_of)

    def kept(self, month: BillingMonth) -> dict[str, list[KeptMonth]]:
        """Every circuit's usage peaks of the month and its neighbours (see peaks.usable)."""
        if month not in self._kept:
            self._kept[month] = self._store.kept_months(month)
        return self._kept[month]


def _unsampled(
    customer: Customer, active: Mapping[str, list[Segment]], lines: Sequence[Line],
    month: BillingMonth,
) -> list[CloseWarning]:
    """A circuit billed in the month with no burst line had no valid sample in it."""
    sampled = {line.circuit_id for line in lines if line.kind is LineKind.BURST}
    return [
        CloseWarning(
            WarningKind.NO_SAMPLES, circuit_id,
            f"circuit {circuit_id} of {customer.tenant_id} has no valid usage sample in "
            f"{month}: no burst line",
        )
        for circuit_id in sorted(active.keys() - sampled)
    ]


def _with_gaps(lines: list[Line], gaps: Sequence[GapVolume]) -> list[Line]:
    """Burst lines with the intervals of their segment lost to meter gaps."""
    if not gaps:
        return lines
    return [
        replace(line, burst=replace(
            line.burst, intervals_lost=intervals_lost(gaps, line.segment_start, line.segment_end)
        ))
        if line.burst is not None else line
        for line in lines
    ]


def _currency(
    customer: Customer,
    active: Mapping[str, list[Segment]],
    circuits: Mapping[str, list[Segment]],
) -> str:
    if customer.currency:
        return customer.currency
    priced = {s.price.currency for segs in (active or circuits).values() for s in segs}
    if len(priced) != 1:
        raise FailedPrecondition(
            f"circuits are priced in {', '.join(sorted(priced)) or 'no currency'}: set the "
            "customer's currency in the billing entities file"
        )
    return priced.pop()
