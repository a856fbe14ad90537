"""A worker's view of its router lease: when it claims, how long it trusts a grant, what it
does next, and how a batch left open by a previous holder is settled."""

from __future__ import annotations

import pytest

from services.provisioning.domain.batch import Settle, settle_left_open
from services.provisioning.domain.lease import LeaseTerms, Move, Tenure

TERMS = LeaseTerms(ttl_s=10.0)


def acquired(at: float = 100.0) -> Tenure:
    tenure = Tenure(TERMS)
    tenure.claimed(True, asked_at=at)
    assert tenure.next_move(at) is Move.TAKE_OVER
    tenure.took_over()
    return tenure


def test_a_fresh_worker_claims_at_once_and_touches_nothing_until_granted() -> None:
    tenure = Tenure(TERMS)
    assert tenure.claim_due(0.0)
    assert tenure.next_move(0.0) is Move.WAIT
    tenure.claimed(False, asked_at=0.0)
    assert tenure.next_move(0.1) is Move.WAIT
    assert not tenure.claim_due(0.1)


def test_a_grant_means_taking_over_first_then_working() -> None:
    tenure = Tenure(TERMS)
    tenure.claimed(True, asked_at=5.0)
    assert tenure.next_move(5.0) is Move.TAKE_OVER
    # Taking over may fail (router unreachable): it stays the next move until done.
    assert tenure.next_move(5.5) is Move.TAKE_OVER
    tenure.took_over()
    assert tenure.next_move(5.5) is Move.WORK


def test_claims_are_renewed_four_times_per_time_to_live() -> None:
    tenure = acquired(at=100.0)
    assert not tenure.claim_due(102.4)
    assert tenure.claim_due(102.5)


def test_a_grant_is_trusted_from_when_it_was_asked_for_less_than_its_ttl() -> None:
    tenure = acquired(at=100.0)
    # The database may answer late; the lease runs from no earlier than the asking, and
    # the holder stops a margin before any peer could take it.
    assert tenure.holds(107.4)
    assert not tenure.holds(107.5)
    assert tenure.next_move(107.5) is Move.STAND_DOWN


def test_renewals_keep_the_lease() -> None:
    tenure = acquired(at=100.0)
    for asked_at in (102.5, 105.0, 107.5, 110.0):
        tenure.claimed(True, asked_at=asked_at)
        assert tenure.next_move(asked_at + 1.0) is Move.WORK


def test_an_unanswered_renewal_lets_the_lease_run_out_on_time() -> None:
    tenure = acquired(at=100.0)
    tenure.unanswered(asked_at=102.5)
    assert tenure.next_move(103.0) is Move.WORK
    assert not tenure.claim_due(104.0)  # no hammering of an unreachable database
    assert tenure.next_move(107.5) is Move.STAND_DOWN


def test_a_refused_renewal_means_standing_down_once_then_waiting() -> None:
    tenure = acquired(at=100.0)
    tenure.claimed(False, asked_at=102.5)
    assert tenure.next_move(102.5) is Move.STAND_DOWN
    tenure.stood_down()
    assert tenure.next_move(102.6) is Move.WAIT


def test_a_fenced_write_that_found_another_holder_means_standing_down() -> None:
    tenure = acquired(at=100.0)
    tenure.lost()
    assert tenure.next_move(100.1) is Move.STAND_DOWN


def test_reacquiring_after_standing_down_takes_over_again() -> None:
    tenure = acquired(at=100.0)
    tenure.lost()
    tenure.stood_down()
    tenure.claimed(True, asked_at=120.0)
    assert tenure.next_move(120.0) is Move.TAKE_OVER


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_a_lease_must_last(ttl: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        LeaseTerms(ttl_s=ttl)


@pytest.mark.parametrize(
    ("confirm_queued", "rolled_back_in_candidate", "settled"),
    [
        (True, False, Settle.CONFIRM),
        (False, False, Settle.CANCEL),
        # The inverse edit was the previous holder's session's, gone with it.
        (True, True, Settle.CANCEL),
        (False, True, Settle.CANCEL),
    ],
)
def test_a_batch_left_open_is_confirmed_only_when_the_saga_decided_so(
    confirm_queued: bool, rolled_back_in_candidate: bool, settled: Settle
) -> None:
    assert (
        settle_left_open(
            confirm_queued=confirm_queued, rolled_back_in_candidate=rolled_back_in_candidate
        )
        is settled
    )
