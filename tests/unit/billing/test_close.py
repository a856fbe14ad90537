"""Month-end close rules: which month each entity closes, completeness, finalisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.billing.domain.close import (
    CloseWarning,
    Completeness,
    MeterFrontier,
    PartitionLag,
    WarningKind,
    close_months,
    may_finalise,
    month_end,
    summarise,
)
from services.billing.domain.jobs import JobLiveness, JobState, abandoned
from services.billing.domain.rating import BillingMonth
from services.billing.jobs import JobSettings
from services.common.config import ConfigError
from services.common.errors import FailedPrecondition, InvalidArgument

SINGAPORE = ZoneInfo("Asia/Singapore")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
NOVEMBER = BillingMonth(2026, 11)


def test_the_previous_month_in_each_entitys_own_time_zone() -> None:
    # 1 Dec 00:30 in Singapore is still 30 Nov in Los Angeles (and in UTC).
    now = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
    months = close_months(now, {"sg-telco": SINGAPORE, "us": LOS_ANGELES})
    assert months == {"sg-telco": NOVEMBER, "us": BillingMonth(2026, 10)}
    january = close_months(datetime(2027, 1, 1, 1, tzinfo=UTC), {"sg-telco": SINGAPORE})
    assert january == {"sg-telco": BillingMonth(2026, 12)}


def test_month_end_is_the_latest_of_the_zones_billed_in_it() -> None:
    assert month_end(NOVEMBER, [SINGAPORE, LOS_ANGELES]) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert month_end(NOVEMBER, [SINGAPORE]) == datetime(2026, 11, 30, 16, tzinfo=UTC)


def completeness(ends: dict[str, datetime], lag: list[PartitionLag] | None) -> Completeness:
    end = month_end(NOVEMBER, [SINGAPORE])
    frontiers = [MeterFrontier(r, e) for r, e in ends.items()]
    return Completeness(NOVEMBER, end, frontiers, lag)


def test_usage_is_complete_when_every_router_reached_the_end_and_nothing_lags() -> None:
    end = month_end(NOVEMBER, [SINGAPORE])
    done = completeness({"sg-edge-1": end, "sg-edge-2": end + timedelta(hours=1)},
                        [PartitionLag("idc.usage.samples", 0, 0)])
    assert done.complete and done.warnings() == [] and done.lag_records == 0


def test_lagging_consumer_early_router_unknown_lag_and_no_usage_are_warnings() -> None:
    end = month_end(NOVEMBER, [SINGAPORE])
    behind = completeness(
        {"sg-edge-1": end, "sg-edge-2": end - timedelta(minutes=10)},
        [PartitionLag("idc.usage.samples", 0, 3), PartitionLag("idc.usage.samples", 1, 4)],
    )
    found = behind.warnings()
    assert [(w.kind, w.subject) for w in found] == [
        (WarningKind.INGEST_BEHIND, "usage consumer"), (WarningKind.INGEST_BEHIND, "sg-edge-2"),
    ]
    assert "7 record(s) behind" in found[0].message and not behind.complete
    unknown = completeness({"sg-edge-1": end}, None)
    assert "lag is unknown" in unknown.warnings()[0].message
    assert unknown.lag_records is None
    nothing = completeness({}, [])
    assert [w.subject for w in nothing.warnings()] == ["meter"]


WARNINGS = [
    CloseWarning(WarningKind.NO_SAMPLES, "c-2", "circuit c-2 has no valid usage sample"),
    CloseWarning(WarningKind.NO_SAMPLES, "c-1", "circuit c-1 has no valid usage sample"),
    CloseWarning(WarningKind.UNKNOWN_TENANT, "newco", "tenant newco is not in the file"),
]


def test_finalising_is_refused_while_warnings_stand_naming_them() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        may_finalise(WARNINGS, "")
    assert "3 warning(s): 2 NO_SAMPLES (c-1, c-2), 1 UNKNOWN_TENANT (newco)" in (
        refused.value.message
    )
    assert "override reason" in refused.value.message


def test_an_override_needs_a_real_reason_and_no_warnings_need_none() -> None:
    assert may_finalise(WARNINGS, "  c-1 and c-2 were down all month, agreed with sales ") == (
        "c-1 and c-2 were down all month, agreed with sales"
    )
    with pytest.raises(InvalidArgument) as short:
        may_finalise(WARNINGS, "ok")
    assert short.value.violations[0].field == "override_reason"
    with pytest.raises(InvalidArgument):
        may_finalise(WARNINGS, "x" * 501)
    assert may_finalise([], "") is None


def test_summary_shows_at_most_five_subjects_per_kind() -> None:
    many = [CloseWarning(WarningKind.USAGE_CONFLICT, f"t{i}", "x") for i in range(7)]
    assert summarise(many) == "7 USAGE_CONFLICT (t0, t1, t2, t3, t4, ...)"


NOW = datetime(2026, 12, 1, tzinfo=UTC)
STALE = timedelta(seconds=120)


@pytest.mark.parametrize(
    ("state", "owner", "age_s", "starting", "expected"),
    [
        (JobState.RUNNING, "billing-a", 10, True, True),  # this host restarted
        (JobState.RUNNING, "billing-b", 10, True, False),  # another process, alive
        (JobState.RUNNING, "billing-b", 121, False, True),  # another process, silent
        (JobState.RUNNING, "billing-a", 10, False, False),  # mine, running now
        (JobState.SUCCEEDED, "billing-b", 9999, False, False),
    ],
)
def test_a_job_is_abandoned_by_a_restart_of_its_host_or_a_stale_heartbeat(
    state: JobState, owner: str, age_s: int, starting: bool, expected: bool
) -> None:
    job = JobLiveness(state, owner, NOW - timedelta(seconds=age_s))
    assert abandoned(job, "billing-a", NOW, STALE, starting=starting) is expected


def test_job_stale_setting_is_read_and_checked() -> None:
    assert JobSettings.from_env({}).stale_s == 120.0
    assert JobSettings.from_env({"IDC_BILLING_JOB_STALE_S": "30"}).stale_s == 30.0
    for bad in ("2", "soon"):
        with pytest.raises(ConfigError) as refused:
            JobSettings.from_env({"IDC_BILLING_JOB_STALE_S": bad})
        assert "IDC_BILLING_JOB_STALE_S" in str(refused.value)
