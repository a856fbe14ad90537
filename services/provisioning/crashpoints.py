"""Crash points, for the tests of crash recovery only.

``IDC_PROVISIONING_CRASH_AT`` lists ``point:circuit_id`` pairs (comma-separated); when the
process reaches a listed point for that circuit it kills itself with SIGKILL, exactly as
an operator's ``kill -9`` or an OOM kill would, at a moment a test could not hit from
outside. Unset (always, outside tests) nothing happens.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "IDC_PROVISIONING_CRASH_AT"
# The router holds a confirmed commit for the circuit; the agent has not replied yet.
AGENT_AFTER_CONFIRMED_COMMIT = "agent-after-confirmed-commit"
# The coordinator has recorded the decision to confirm and queued both CONFIRMs, before
# its outbox relay may or may not have sent them.
COORDINATOR_AFTER_DECISION = "coordinator-after-decision"


def crash_point(point: str, circuit_id: str) -> None:
    if f"{point}:{circuit_id}" in os.environ.get(ENV, "").split(","):
        log.warning("crash point %s reached for circuit %s: killing the process", point, circuit_id)
        os.kill(os.getpid(), signal.SIGKILL)
