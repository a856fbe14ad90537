"""Which agent worker drives a router, and what a worker does with what it finds.

Several agents of one telco share the telco's database (queue, batches) and each runs a
worker per router, but a router must have one driver: its candidate has one lock, and a
pending confirmed commit refuses every other session's lock. So each router has a **lease**
row in that database: a worker claims it with one conditional UPDATE (free, expired, or
already its own), expiry judged by the database's clock, and renews it well inside its
time-to-live. The worker without the lease touches neither the router nor the queue.

This module is the worker's side of it, with no I/O: when to claim, how long a granted
claim may be trusted on the worker's own (monotonic) clock, and the move that follows.

* A granted claim is trusted from the moment it was *asked* (before the database answered)
  for the time-to-live less a margin, so the worker stops before any peer can take over.
* TAKE_OVER comes first after acquiring: settle the batches a previous holder (or this
  agent before a restart) left open, then WORK.
* STAND_DOWN when the lease is lost (a peer holds it, or it could not be renewed in time):
  let go of the router session so its candidate lock does not block the new holder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Move(enum.Enum):
    WAIT = "wait"  # another worker drives the router: touch nothing
    TAKE_OVER = "take over"  # just acquired: settle what was left open, then work
    WORK = "work"
    STAND_DOWN = "stand down"  # lost: release the router session, then wait


@dataclass(frozen=True)
class LeaseTerms:
    ttl_s: float = 10.0

    def __post_init__(self) -> None:
        if self.ttl_s <= 0:
            raise ValueError(f"lease time-to-live must be positive, not {self.ttl_s}")

    @property
    def renew_every_s(self) -> float:
        """Four renewals per time-to-live: three may fail before the holder stops."""
        return self.ttl_s / 4

    @property
    def trusted_s(self) -> float:
        """How long after asking the holder trusts a granted claim (a margin short)."""
        return self.ttl_s - self.renew_every_s


@dataclass
class Tenure:
    """One worker's view of its router lease; times are the worker's monotonic clock."""

    terms: LeaseTerms
    _valid_until: float | None = None
    _last_claim_at: float | None = None
    _acting: bool = False  # the worker has driven the router since it last acquired

    def claim_due(self, now: float) -> bool:
        return self._last_claim_at is None or now - self._last_claim_at >= self.terms.renew_every_s

    def claimed(self, granted: bool, asked_at: float) -> None:
        """The database's answer to a claim asked at ``asked_at``."""
        self._last_claim_at = asked_at
        self._valid_until = asked_at + self.terms.trusted_s if granted else None

    def unanswered(self, asked_at: float) -> None:
        """The claim got no answer (database unreachable): a held lease runs out on time."""
        self._last_claim_at = asked_at

    def lost(self) -> None:
        """A fenced write found the lease no longer ours."""
        self._valid_until = None

    def holds(self, now: float) -> bool:
        return self._valid_until is not None and now < self._valid_until

    def next_move(self, now: float) -> Move:
        if self.holds(now):
            return Move.WORK if self._acting else Move.TAKE_OVER
        return Move.STAND_DOWN if self._acting else Move.WAIT

    def took_over(self) -> None:
        self._acting = True

    def stood_down(self) -> None:
        self._acting = False
