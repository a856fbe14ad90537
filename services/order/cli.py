"""`python -m services.order tokens ...`: issue and revoke API tokens."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from services.common import db
from services.common.auth import Principal, Role, SqlTokenStore
from services.common.config import ConfigError, ServiceSettings
from services.common.errors import InvalidArgument

MIGRATIONS = Path(__file__).parent / "migrations"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.order tokens")
    commands = parser.add_subparsers(dest="command", required=True)
    issue = commands.add_parser("issue", help="create a token and print it")
    issue.add_argument("--role", required=True, choices=[r.value for r in Role])
    issue.add_argument("--subject", required=True, help="who holds it, e.g. alice@acme")
    issue.add_argument("--tenant", help="the customer's tenant (role customer)")
    issue.add_argument("--telco", help="the ops user's telco, sg or cq (role ops)")
    revoke = commands.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token")
    return parser


def tokens_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = ServiceSettings.from_env("order", 50051)
    except ConfigError as error:
        print(f"order: configuration error: {error}", file=sys.stderr)
        return 2
    db.migrate(settings.database_url, MIGRATIONS)
    engine = db.make_engine(settings.database_url)
    store = SqlTokenStore(db.make_session_factory(engine), settings.token_pepper)
    try:
        if args.command == "issue":
            try:
                principal = Principal(args.subject, Role(args.role), args.tenant, args.telco)
            except InvalidArgument as error:
                print(f"cannot issue the token: {error.message}", file=sys.stderr)
                return 2
            print(store.issue(principal))
            return 0
        if not store.revoke(args.token):
            print("no such active token", file=sys.stderr)
            return 1
        return 0
    finally:
        engine.dispose()
