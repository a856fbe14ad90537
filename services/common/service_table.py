"""Every process the product ships, in one table: name, module, default port, migrations.

The services' entry points, idcctl's default addresses, token issuing and the devstack all
read this table, so a port or a migrations folder is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServiceEntry:
    # Names the settings prefix (IDC_<NAME>_LISTEN) and the process in logs.
    name: str
    # ``python -m <module>`` starts it.
    module: str
    default_port: int
    # Alembic scripts of its own database; None for a process without one.
    migrations: Path | None
    # Its API checks bearer tokens against its own database.
    takes_tokens: bool
    # Where `make run` serves its Prometheus metrics (IDC_METRICS_LISTEN); in Kubernetes
    # every pod uses the exporter's conventional 9464.
    metrics_port: int

    @property
    def default_address(self) -> str:
        return f"127.0.0.1:{self.default_port}"

    @property
    def migrations_dir(self) -> Path:
        if self.migrations is None:
            raise LookupError(f"{self.name} has no database of its own")
        return self.migrations


ORDER = ServiceEntry(
    "order", "services.order", 50051, _PACKAGE / "order" / "migrations", True, 9461
)
PROVISIONING = ServiceEntry(
    "provisioning", "services.provisioning", 50052,
    _PACKAGE / "provisioning" / "migrations", True, 9462,
)
BILLING = ServiceEntry(
    "billing", "services.billing", 50053, _PACKAGE / "billing" / "migrations", True, 9463
)
METER = ServiceEntry(
    "meter", "services.billing.meter", 50054,
    _PACKAGE / "billing" / "meter" / "migrations", False, 9464,
)
CONSOLE = ServiceEntry("console", "services.console", 8080, None, False, 9465)

SERVICES: tuple[ServiceEntry, ...] = (ORDER, PROVISIONING, BILLING, METER, CONSOLE)
# The gRPC APIs people and idcctl call with a token.
API_SERVICES: tuple[ServiceEntry, ...] = tuple(s for s in SERVICES if s.takes_tokens)
