"""README's partner REST session (the bash block of "Partner REST") run as it stands with
curl and jq against the running facade: only the host is this test's, the token is read
from a var/demo-tokens.json as `make run` writes it. What it printed and what it left
(a cancelled order, a change in progress, no hub subscription) are checked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from idc.order.v1 import order_pb2
from idc.order.v1 import webhook_service_pb2 as pb
from services.common.config import KafkaSettings
from tests.integration.order.harness import activated
from tests.integration.order.rest_client import running_rest
from tests.integration.order.test_webhooks import Hooks

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[3] / "README.md"
HOST_LINE = re.compile(r"^HOST=https://127\.0\.0\.1:8090;", re.M)


def session() -> str:
    section = README.read_text().split("## Partner REST (Sonata-style)", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_the_readme_session_runs_against_the_facade(
        sqlite_database_url: str, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    if not (shutil.which("curl") and shutil.which("jq")):
        pytest.skip("the README session needs curl and jq")
    script = session()
    assert HOST_LINE.search(script), "the session no longer starts with HOST=..."
    with running_rest(sqlite_database_url, kafka_settings) as rest:
        # An active circuit for the change, and two pending orders so the list has a page 2.
        order = rest.svc.alice.create(100)
        rest.svc.approve_both(order)
        rest.svc.publish(activated(order), order.circuit_id)
        rest.svc.wait_state(order.id, order_pb2.ORDER_STATE_COMPLETED)
        oldest = rest.svc.alice.create(10).id
        rest.svc.alice.create(20)
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "demo-tokens.json").write_text(json.dumps(
            [{"name": "customer", "token": rest.svc.alice.token}]))
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", HOST_LINE.sub(f"HOST={rest.url};", script)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        out = ran.stdout
        lines = out.splitlines()
        assert "pending" in lines  # the order, waiting for the telcos
        assert oldest in lines  # on the page the Link header led to
        assert '"state":"cancelled"' in out
        assert re.search(r"^boost until \S+Z, revert \S+$", out, re.M)  # booked, then:
        assert lines.count("cancelled") == 1  # the boost's cancellation
        assert out.count('"quoteLevel":"budgetary"') == 2  # the change's and the disconnect's
        assert re.search(r"^whsec_\S+$", out, re.M)
        assert "idc.events.v1.CircuitActivated" in out  # the hub's query, in our names
        assert rest.svc.alice.circuit(order.circuit_id).pending_order_id  # the change placed
        hooks = Hooks(rest.svc.address, "alice")
        assert not hooks("ListSubscriptions", pb.ListSubscriptionsRequest()).subscriptions
        hooks.close()
