"""idcctl's TLS file flags: --ca-file, --client-cert and --client-key win over their
IDC_TLS_* variables, and a bad one is a usage error naming the flag. (Against the running
stack: tests/integration/cli/test_tls_flags.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.client import Connection
from services.cli.errors import CliError, ExitCode


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "env-ca")}
    for path in made.values():
        path.write_text("PEM")
    return made


def resolve(env: dict[str, str], **tls: str) -> Connection:
    flags = {f"--{name.replace('_', '-')}": value for name, value in tls.items()}
    return Connection.resolve({}, "token", 5.0, env, flags)


def test_the_flags_win_over_the_variables(files: dict[str, Path]) -> None:
    env = {"IDC_TLS_CA_FILE": str(files["env-ca"])}
    assert resolve(env).tls.ca_file == files["env-ca"]
    tls = resolve(env, ca_file=str(files["ca"]), client_cert=str(files["cert"]),
                  client_key=str(files["key"])).tls
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (files["ca"], files["cert"],
                                                         files["key"])


def test_a_bad_flag_is_a_usage_error_naming_it(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"^--ca-file='.*none' is not valid") as missing:
        resolve({}, ca_file=str(tmp_path / "none"))
    assert missing.value.exit_code == ExitCode.USAGE
    with pytest.raises(CliError, match=r"^--client-key \(IDC_TLS_CLIENT_KEY_FILE\) is not set: "
                       r"--client-cert and --client-key \(IDC_TLS_CLIENT_KEY_FILE\) go"):
        resolve({}, client_cert=str(files["cert"]))
    # Without flags the variables' own names.
    with pytest.raises(CliError, match=r"^IDC_TLS_CLIENT_KEY_FILE is not set"):
        resolve({"IDC_TLS_CLIENT_CERT_FILE": str(files["cert"])})
