"""idcctl ops dlq / ops outbox against the running stack: each topic's producer answers
(the meter too, with a token `admin tokens issue` had the issuer sign), admins only.
The replay and republish flows themselves are tests/integration/test_event_admin.py."""

from __future__ import annotations

import json

import pytest

from devstack.run import RunningStack
from tests.integration.cli.conftest import Idcctl

pytestmark = pytest.mark.integration


def test_dead_letters_and_outbox_of_every_producer_for_admins_only(
    idcctl: Idcctl, stack: RunningStack
) -> None:
    env = {"IDC_VAR_DIR": str(stack.var_dir),
           "IDC_METER_ADDRESS": stack.address("billing.meter")}
    issued = idcctl("admin", "tokens", "issue", "--role", "admin", "--subject", "root@ops",
                    "-o", "json", token="admin", env=env)
    assert issued.code == 0, issued.stderr
    as_root = {**env, "IDC_TOKEN": json.loads(issued.stdout)["token"]}

    for topic in ("idc.usage.samples", "idc.order.events", "idc.circuit.events"):
        listed = idcctl("ops", "dlq", "list", topic, "-o", "json", env=as_root)
        assert listed.code == 0, (topic, listed.stderr)
        assert json.loads(listed.stdout).get("deadLetters", []) == [], topic

    refused = idcctl("ops", "dlq", "list", "idc.usage.samples", token="ops-sg", env=env)
    assert refused.code == 5 and "admin" in refused.stderr
    missing = idcctl("ops", "dlq", "show", "idc.order.events", "0:0", env=as_root)
    assert missing.code == 4 and "no dead letter" in missing.stderr
    unknown = idcctl("ops", "outbox", "republish", "--service", "meter", "--event-id", "nope",
                     env=as_root)
    assert unknown.code == 4 and "no outbox row" in unknown.stderr
