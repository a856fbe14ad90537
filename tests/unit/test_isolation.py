"""The unit tests need no peer: collecting them imports neither the devstack nor the
integration fixtures (tests/fixtures, loaded by tests/integration/conftest.py only)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("devstack", "tests.fixtures")
# Collects tests/unit in a fresh interpreter, then prints what got imported on the way.
PROBE = """
import json, sys, pytest
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests/unit"])
print(json.dumps({"code": int(code), "modules": sorted(sys.modules)}))
"""


def forbidden(modules: Iterable[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_collecting_the_unit_tests_imports_no_devstack_and_no_fixture() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stdout[-2000:]
    assert "tests.unit.test_isolation" in result["modules"]
    assert forbidden(result["modules"]) == []


def test_the_check_names_a_devstack_or_fixture_import() -> None:
    modules = ["devstack.netconf", "devstackish", "tests.fixtures.kafka", "tests.unit.x"]
    assert forbidden(modules) == ["devstack.netconf", "tests.fixtures.kafka"]
