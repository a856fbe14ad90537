"""Every test runs with plaintext gRPC unless it asks for TLS itself.

``IDC_TLS=off`` is the explicit switch a service needs to serve plaintext (without it, a
service with no certificate refuses to start): processes and in-process servers the
tests start inherit it; tests/integration/test_tls.py passes its own TLS settings.
"""

import os
from typing import Any

import pytest

os.environ["IDC_TLS"] = "off"


# With pytest-xdist (``make test`` runs two workers), each work unit is one test file, so a
# module's own stack starts once; the idcctl tests share one package-scoped stack
# (tests/integration/cli/conftest.py), so that package is a single unit, on one worker.
SHARED_STACK_PACKAGES = ("tests/integration/cli/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadFileScheduling  # type: ignore[import-untyped]

    class ByFileOrSharedStack(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            for package in SHARED_STACK_PACKAGES:
                if nodeid.startswith(package):
                    return package
            return str(super()._split_scope(nodeid))

    return ByFileOrSharedStack(config, log)
