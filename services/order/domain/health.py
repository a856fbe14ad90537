"""A circuit's health as its customer sees it, from the drift provisioning reports per
router side: no router names and no configuration, only whether the circuit runs as
ordered. Plain Python, no I/O.

* a side that lost the circuit (drift kind ``missing``) puts it out of service;
* a side that carries it otherwise (``different``, e.g. an altered rate) is a drift that
  operations are repairing; the circuit still carries traffic;
* no drift: in sync (since the last drift was cleared, or since activation).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


class Health(enum.StrEnum):
    IN_SYNC = ""
    DRIFT_BEING_REPAIRED = "repairing"
    OUT_OF_SERVICE = "out_of_service"


MISSING, DIFFERENT = "missing", "different"
HEALTH_OF_KIND = {MISSING: Health.OUT_OF_SERVICE, DIFFERENT: Health.DRIFT_BEING_REPAIRED}


@dataclass(frozen=True)
class SideDrift:
    kind: str  # MISSING or DIFFERENT
    since: datetime


def circuit_health(drifts: Iterable[SideDrift]) -> tuple[Health, datetime | None]:
    """The worst drift of the circuit's sides and since when it holds; IN_SYNC and None
    when no side drifts."""
    worst: tuple[Health, datetime | None] = (Health.IN_SYNC, None)
    for drift in drifts:
        health = HEALTH_OF_KIND[drift.kind]
        if health is worst[0] and worst[1] is not None:
            worst = (health, min(worst[1], drift.since))
        elif worst[0] is Health.IN_SYNC or health is Health.OUT_OF_SERVICE:
            worst = (health, drift.since)
    return worst
