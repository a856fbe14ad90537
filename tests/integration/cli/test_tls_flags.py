"""idcctl's --ca-file against the running stack, which serves TLS from a local CA: the
stack's CA works (the flag winning over IDC_TLS_CA_FILE), another CA fails with an error
that says the server's certificate was not verified, and a non-zero exit status.
(--client-cert / --client-key: tests/unit/cli/test_tls_flags.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.certs import LocalCa
from devstack.run import RunningStack
from services.cli.errors import ExitCode
from tests.integration.cli.conftest import Idcctl

pytestmark = pytest.mark.integration


@pytest.fixture
def other_ca(tmp_path: Path) -> str:
    path = tmp_path / "other-ca.pem"
    path.write_bytes(LocalCa.create("another CA").cert_pem)
    return str(path)


def test_ca_file_flag_trusts_the_stacks_ca_and_refuses_another(
        stack: RunningStack, idcctl: Idcctl, other_ca: str) -> None:
    stack_ca = str(stack.tls.ca_file)
    without_env = {"IDC_TLS_CA_FILE": ""}
    assert idcctl("customer", "sites", "--ca-file", stack_ca, env=without_env).code == 0
    # The flag wins over the variable.
    assert idcctl("customer", "sites", "--ca-file", stack_ca, env={
        "IDC_TLS_CA_FILE": other_ca}).code == 0

    refused = idcctl("customer", "sites", "--ca-file", other_ca)
    assert refused.code == ExitCode.UNAVAILABLE
    assert "cannot reach the order service" in refused.stderr
    assert "certificate" in refused.stderr.lower(), refused.stderr
    assert "--ca-file" in refused.stderr, refused.stderr

    missing = idcctl("customer", "sites", "--ca-file", str(Path(other_ca).parent / "none"))
    assert missing.code == ExitCode.USAGE
    assert "--ca-file=" in missing.stderr and "no such readable file" in missing.stderr
