"""API tokens in every service's database.

Each service checks bearer tokens against its own ``api_tokens`` table (peppered hashes,
``IDC_TOKEN_PEPPER``), so a token a person uses with several services must be stored in
each of them. This module does that for ``idcctl admin tokens`` and for ``make run``'s
demo tokens; it needs the databases (``IDC_<SERVICE>_DATABASE_URL``, default SQLite
under ``IDC_VAR_DIR``), not the running services.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from services.common import db
from services.common.auth import Principal, Role, SqlTokenStore
from services.common.config import ServiceSettings
from services.common.service_table import ORDER, SERVICES

# Every service with a database checks tokens on its API (the meter's: EventAdminService).
TOKEN_SERVICES = tuple(service for service in SERVICES if service.migrations is not None)


def database_urls(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {
        service.name: ServiceSettings.from_env(
            service.name, service.default_port, env
        ).database_url
        for service in TOKEN_SERVICES
    }


def token_stores(env: Mapping[str, str] | None = None) -> dict[str, SqlTokenStore]:
    """One token store per service database, each migrated to the current schema."""
    env = os.environ if env is None else env
    pepper = ServiceSettings.from_env(ORDER.name, ORDER.default_port, env).token_pepper
    stores = {}
    migrations = {service.name: service.migrations_dir for service in TOKEN_SERVICES}
    for name, url in database_urls(env).items():
        db.migrate(url, migrations[name])
        stores[name] = SqlTokenStore(db.make_session_factory(db.make_engine(url)), pepper)
    return stores


def issue_everywhere(
    principal: Principal, token: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Store one token for ``principal`` in every service database; returns it.

    With ``token`` given, an existing token is kept (issuing it again changes nothing).
    """
    for store in token_stores(env).values():
        token = store.issue(principal, token)
    assert token is not None
    return token


def revoke_everywhere(token: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Revoke ``token`` wherever it is active; returns the services it was revoked in."""
    return [name for name, store in token_stores(env).items() if store.revoke(token)]


@dataclass(frozen=True)
class DemoToken:
    """One of the tokens ``make run`` creates for trying the system."""

    name: str
    role: str
    subject: str
    tenant: str | None
    telco: str | None
    token: str = ""

    def principal(self) -> Principal:
        return Principal(self.subject, Role(self.role), self.tenant, self.telco)


DEMO_TENANT = "acme-sg"
DEMO_PRINCIPALS = (
    DemoToken("customer", Role.CUSTOMER.value, "alice@acme-sg", DEMO_TENANT, None),
    DemoToken("ops-sg", Role.OPS.value, "sam@sg-telco", None, "sg"),
    DemoToken("ops-cq", Role.OPS.value, "chen@cq-telco", None, "cq"),
    # A second Singapore operator: four eyes on a repair Singapore's ops requested.
    DemoToken("ops-sg-2", Role.OPS.value, "sue@sg-telco", None, "sg"),
    DemoToken("billing", Role.BILLING_ADMIN.value, "bea@billing", None, None),
)


def ensure_demo_tokens(
    tokens_file: Path, env: Mapping[str, str] | None = None
) -> dict[str, DemoToken]:
    """The demo tokens, from ``tokens_file`` if an earlier start wrote it, else new ones;
    either way stored in every service database (so deleting a database is healed)."""
    known: dict[str, str] = {}
    if tokens_file.exists():
        known = {t["name"]: t["token"] for t in json.loads(tokens_file.read_text())}
    issued = {}
    for demo in DEMO_PRINCIPALS:
        token = issue_everywhere(demo.principal(), known.get(demo.name), env)
        issued[demo.name] = DemoToken(**{**asdict(demo), "token": token})
    _write_private(tokens_file, json.dumps([asdict(t) for t in issued.values()], indent=2))
    return issued


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")


def describe(tokens: Iterable[DemoToken]) -> list[str]:
    return [
        f"{t.name:<9} {t.token}   ({t.role}"
        + (f", tenant {t.tenant}" if t.tenant else "")
        + (f", telco {t.telco}" if t.telco else "")
        + ")"
        for t in tokens
    ]
