"""The port to an edge router: what a router agent asks of one router's NETCONF session.

:class:`services.provisioning.netconf.NetconfSession` implements it over SSH; the unit
tests use an in-memory router that behaves as the devstack's netconfd was measured to
(confirmed commit 1.1 with persist, revert at the timeout, one pending commit per router).

Every method raises :class:`~services.provisioning.domain.faults.RouterFailure` when the
step fails. The fault's kind tells what is known:

* ``RPC_ERROR``: the router answered with an rpc-error; the step was not applied;
* ``TIMEOUT`` or ``TRANSPORT``: no answer (or the session dropped); the step may or may
  not have been applied. The session is closed; the next call opens a new one.
"""

from __future__ import annotations

from typing import Protocol

from services.provisioning.domain.faults import FaultKind, RouterFault

# How the devstack's netconfd answers a commit by a persist id that is not pending
# (measured 2026-12-02): a confirming or follow-up commit -> operation-failed "persistent
# confirmed commit not active"; a cancel-commit -> operation-failed "operation failed"; any
# of them while another persist id is pending -> invalid-value. A router has one pending
# commit at a time, so each means: nothing is pending under this id.
CONFIRMED_COMMIT_NOT_ACTIVE = "confirmed commit not active"
ANOTHER_PENDING_TAG = "invalid-value"
CANCEL_FOUND_NOTHING_TAGS = frozenset({"operation-failed", ANOTHER_PENDING_TAG})


def outcome_unknown(fault: RouterFault) -> bool:
    """Whether a failed step may have been applied all the same (no answer came)."""
    return fault.kind in (FaultKind.TIMEOUT, FaultKind.TRANSPORT)


def commit_found_nothing(fault: RouterFault) -> bool:
    """Whether a confirming or follow-up commit was refused because nothing is pending
    under its persist id (it ended some other way: read running). Only the router's own
    words count: an invalid-value may also be the candidate failing validation, with our
    commit still pending; such a refusal is handled as one (the batch is cancelled, and a
    cancel that finds another id pending reads running)."""
    return fault.kind is FaultKind.RPC_ERROR and CONFIRMED_COMMIT_NOT_ACTIVE in fault.message


def cancel_found_nothing(fault: RouterFault) -> bool:
    """Whether a cancel-commit was refused because nothing is pending under its id."""
    return fault.kind is FaultKind.RPC_ERROR and (
        fault.error_tag in CANCEL_FOUND_NOTHING_TAGS or CONFIRMED_COMMIT_NOT_ACTIVE in fault.message
    )


class RouterSession(Protocol):
    """One router's session, used by one worker at a time."""

    @property
    def holds_lock(self) -> bool:
        """Whether this session holds the candidate lock (a session reopened after a drop
        holds none): the candidate is discarded only then, never someone else's edits."""

    def lock_candidate(self) -> None: ...

    def unlock_candidate(self) -> None: ...

    def edit_candidate(self, config: str) -> None:
        """edit-config of ``config`` (a ``<config>`` document) into the candidate."""

    def discard(self) -> None:
        """discard-changes: the candidate back to running."""

    def commit(self) -> None:
        """A plain commit of the candidate."""

    def confirmed_commit(self, persist_id: str, timeout_s: int) -> None:
        """A confirmed commit with ``persist`` = ``persist_id``: reverted by the router at
        ``timeout_s`` unless confirmed, from any session, by that id."""

    def confirmed_commit_more(self, persist_id: str, timeout_s: int) -> None:
        """A follow-up confirmed commit: the candidate's new edits join the pending commit
        ``persist_id`` (its timeout restarts)."""

    def confirm(self, persist_id: str) -> None:
        """The confirming commit of the pending commit ``persist_id``."""

    def cancel(self, persist_id: str) -> None:
        """cancel-commit of the pending commit ``persist_id`` (running reverts)."""

    def running(self, subtree: str | None = None) -> str:
        """The running configuration's ``<data>``, or what the ``subtree`` filter selects."""

    def close(self) -> None:
        """Close the session (a commit without persist would revert; ours have persist)."""
