"""Console settings from the environment: defaults, and bad values named at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.common.config import ConfigError
from services.console.settings import ConsoleSettings

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_defaults_run_next_to_the_services_on_one_machine() -> None:
    settings = ConsoleSettings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.order_address == "127.0.0.1:50051"
    assert settings.provisioning_address == "127.0.0.1:50052"


@pytest.mark.parametrize(("env", "named"), [
    ({"IDC_CONSOLE_LISTEN": "8080"}, "IDC_CONSOLE_LISTEN"),
    ({"IDC_ORDER_ADDRESS": "localhost:http"}, "IDC_ORDER_ADDRESS"),
    ({"IDC_CONSOLE_TLS_CERT": "/tmp/cert.pem"}, "IDC_CONSOLE_TLS_KEY"),
    ({"IDC_CONSOLE_SESSION_IDLE_S": "0"}, "IDC_CONSOLE_SESSION_IDLE_S"),
    ({"IDC_CONSOLE_CALL_TIMEOUT_S": "soon"}, "IDC_CONSOLE_CALL_TIMEOUT_S"),
])
def test_bad_values_are_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ConsoleSettings.from_env(env)


def test_the_process_exits_2_naming_the_variable() -> None:
    done = subprocess.run([sys.executable, "-m", "services.console"],
                          env={"IDC_CONSOLE_LISTEN": "nowhere", "PATH": ""},
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and "IDC_CONSOLE_LISTEN" in done.stderr
