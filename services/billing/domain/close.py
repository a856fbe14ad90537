"""Month-end close: which month each entity closes, what stands against finalising it.

A close runs the month's billing for every entity, then gathers warnings: anything a
finance team must look at before invoices become final and immutable. Finalisation is
refused while warnings stand, unless someone overrides them with a reason (recorded).
Pure functions; the application (services/billing/close.py) feeds them what it read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from services.billing.domain.rating import BillingMonth
from services.common.errors import FailedPrecondition, InvalidArgument

# An override reason is read by auditors: a word or two is not a reason.
MIN_REASON_LENGTH = 10
MAX_REASON_LENGTH = 500


class WarningKind(StrEnum):
    # A second, different report of an interval was set aside (the first one is billed).
    USAGE_CONFLICT = "USAGE_CONFLICT"
    # A circuit billed in the month has no valid usage sample in it (no burst line).
    NO_SAMPLES = "NO_SAMPLES"
    # Usage of the month may still be arriving: the consumer lags or the newest stored
    # interval ends before the month does.
    INGEST_BEHIND = "INGEST_BEHIND"
    # A tenant the billing entities file does not list: billed under the defaults.
    UNKNOWN_TENANT = "UNKNOWN_TENANT"
    # The two ends of a circuit metered different usage beyond the tolerance.
    RECONCILIATION_DIFFERENCE = "RECONCILIATION_DIFFERENCE"
    # A customer whose invoice could not be computed (the message says why).
    NOT_INVOICED = "NOT_INVOICED"


@dataclass(frozen=True)
class CloseWarning:
    kind: WarningKind
    # What it is about: a tenant, a circuit, a meter router.
    subject: str
    message: str

    def __str__(self) -> str:
        return self.message


def close_months(now: datetime, zones: Mapping[str, ZoneInfo]) -> dict[str, BillingMonth]:
    """Per entity id, the month a close at ``now`` bills: the previous month in the
    entity's own time zone (on the 1st at 00:30 in Singapore that is last month there,
    while it may still be the 31st elsewhere)."""
    months = {}
    for entity_id, zone in zones.items():
        local = now.astimezone(zone)
        months[entity_id] = BillingMonth(local.year, local.month).previous
    return months


def month_end(month: BillingMonth, zones: Iterable[ZoneInfo]) -> datetime:
    """The last instant any of ``zones`` is still in ``month``: usage up to it is billed."""
    return max(month.window(zone)[1] for zone in zones)


@dataclass(frozen=True)
class MeterFrontier:
    """The newest usage stored from one meter router."""

    router_name: str
    newest_interval_end: datetime


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    records: int


@dataclass(frozen=True)
class Completeness:
    month: BillingMonth
    # Usage of the month ends here (the latest of the zones billed in it).
    month_end: datetime
    frontiers: Sequence[MeterFrontier]
    # None: the broker did not answer, so the lag is unknown.
    lag: Sequence[PartitionLag] | None

    @property
    def lag_records(self) -> int | None:
        return None if self.lag is None else sum(p.records for p in self.lag)

    def warnings(self) -> list[CloseWarning]:
        """Why the month's usage is not known to be complete; empty when it is."""
        found = []
        if self.lag is None:
            found.append(
                CloseWarning(
                    WarningKind.INGEST_BEHIND,
                    "usage consumer",
                    "the usage consumer's lag is unknown (the broker did not answer): "
                    "usage of the month may still be arriving",
                )
            )
        elif self.lag_records:
            found.append(
                CloseWarning(
                    WarningKind.INGEST_BEHIND,
                    "usage consumer",
                    f"the usage consumer is {self.lag_records} record(s) behind the broker",
                )
            )
        if not self.frontiers:
            found.append(
                CloseWarning(
                    WarningKind.INGEST_BEHIND,
                    "meter",
                    "no usage has been stored from any router",
                )
            )
        for frontier in self.frontiers:
            if frontier.newest_interval_end < self.month_end:
                found.append(
                    CloseWarning(
                        WarningKind.INGEST_BEHIND,
                        frontier.router_name,
                        f"usage from {frontier.router_name} is stored up to "
                        f"{frontier.newest_interval_end.isoformat()}, before the month's end "
                        f"{self.month_end.isoformat()}",
                    )
                )
        return found

    @property
    def complete(self) -> bool:
        return not self.warnings()


@dataclass(frozen=True)
class Override:
    reason: str
    # The principal who gave it (subject, as the billing service knows it).
    by: str


def check_reason(reason: str) -> str:
    text = reason.strip()
    if len(text) < MIN_REASON_LENGTH:
        raise InvalidArgument.for_field(
            "override_reason",
            f"must say why the warnings are accepted (at least {MIN_REASON_LENGTH} characters)",
        )
    if len(text) > MAX_REASON_LENGTH:
        raise InvalidArgument.for_field(
            "override_reason", f"must be at most {MAX_REASON_LENGTH} characters"
        )
    return text


def summarise(warnings: Sequence[CloseWarning]) -> str:
    """ "2 NO_SAMPLES (c-1, c-2), 1 INGEST_BEHIND (usage consumer)": counts per kind."""
    counts = Counter(w.kind for w in warnings)
    parts = []
    for kind in WarningKind:
        if counts[kind]:
            subjects = sorted({w.subject for w in warnings if w.kind is kind})
            shown = ", ".join(subjects[:5]) + (", ..." if len(subjects) > 5 else "")
            parts.append(f"{counts[kind]} {kind.value} ({shown})")
    return ", ".join(parts)


def may_finalise(warnings: Sequence[CloseWarning], override_reason: str) -> str | None:
    """Whether a close with ``warnings`` may be finalised: returns the checked override
    reason (None when there is nothing to override); raises FailedPrecondition naming the
    warnings when some stand and no reason is given."""
    if not warnings:
        return check_reason(override_reason) if override_reason.strip() else None
    if not override_reason.strip():
        raise FailedPrecondition(
            f"the close has {len(warnings)} warning(s): {summarise(warnings)}; resolve them "
            "and close again, or finalise with an override reason",
        )
    return check_reason(override_reason)
