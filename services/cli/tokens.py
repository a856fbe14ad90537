"""``idcctl admin tokens``: the token issuer's API (idc.ops.v1.TokenService, order service).

issue, list, rotate and revoke need an admin token (``IDC_TOKEN``). The first admin token
comes from ``bootstrap``, the break-glass: it signs a short-lived (at most one hour) admin
token offline with the issuer's signing key file, which the operator then uses to issue
real tokens through the API. ``make run``'s demo tokens are issued the same way
(:func:`ensure_demo_tokens`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration
from rich.console import Console

from idc.ops.v1 import token_service_pb2 as pb
from services.cli import render
from services.cli.client import Api, Connection
from services.cli.commands import Context
from services.cli.errors import CliError, ExitCode
from services.cli.render import Result
from services.common.auth import Principal, Role
from services.common.tokens import BOOTSTRAP_MAX_TTL_S, KeySet, SigningKey

ROLES = [role.value for role in Role]
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def duration(raw: str) -> Duration:
    """``90s``, ``30m``, ``12h``, ``30d`` (argparse type)."""
    unit = _UNITS.get(raw[-1:])
    if unit is None or not raw[:-1].isdigit():
        raise argparse.ArgumentTypeError(f"{raw!r} is not a duration: use 90s, 30m, 12h or 30d")
    return Duration(seconds=int(raw[:-1]) * unit)


def _info_rows(tokens: Iterable[pb.TokenInfo]) -> list[list[Any]]:
    return [
        [t.token_id, t.principal_id, t.subject, t.role, t.tenant_id or t.telco or "",
         render.when(t.issue_time), render.when(t.expire_time),
         render.when(t.revoke_time) if t.HasField("revoke_time") else ""]
        for t in tokens
    ]


_COLUMNS = ["token id", "principal", "subject", "role", "tenant/telco", "issued", "expires",
            "revoked"]


def _show_issued(token: str, info: pb.TokenInfo) -> Any:
    def show(console: Console) -> None:
        console.print(token, soft_wrap=True)
        console.print(f"token id {info.token_id}, expires {render.when(info.expire_time)}",
                      style="dim")

    return show


def tokens_issue(ctx: Context, args: argparse.Namespace) -> Result:
    request = pb.IssueTokenRequest(subject=args.subject, role=args.role,
                                   tenant_id=args.tenant or "", telco=args.telco or "")
    if args.ttl is not None:
        request.ttl.CopyFrom(args.ttl)
    reply = ctx.api.call("order", ctx.api.tokens.IssueToken, request)
    return Result(reply, _show_issued(reply.token, reply.info))


def tokens_list(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call("order", ctx.api.tokens.ListTokens,
                         pb.ListTokensRequest(include_inactive=args.all))
    return Result(reply, lambda console: console.print(
        render.table("tokens", _COLUMNS, _info_rows(reply.tokens))))


def tokens_rotate(ctx: Context, args: argparse.Namespace) -> Result:
    request = pb.RotateTokenRequest(token_id=args.token_id)
    if args.ttl is not None:
        request.ttl.CopyFrom(args.ttl)
    if args.grace is not None:
        request.grace.CopyFrom(args.grace)
    reply = ctx.api.call("order", ctx.api.tokens.RotateToken, request)
    return Result(reply, _show_issued(reply.token, reply.info))


def tokens_revoke(ctx: Context, args: argparse.Namespace) -> Result:
    reply = ctx.api.call("order", ctx.api.tokens.RevokeToken,
                         pb.RevokeTokenRequest(token_id=args.token_id))
    return Result(reply, lambda console: console.print(
        f"revoked {reply.info.token_id} from {render.when(reply.info.revoke_time)}"))


def bootstrap_token(signing_key_file: Path, subject: str, ttl_s: int) -> str:
    """The break-glass admin token, signed offline; at most BOOTSTRAP_MAX_TTL_S."""
    if not 0 < ttl_s <= BOOTSTRAP_MAX_TTL_S:
        raise CliError(f"a bootstrap token lives at most {BOOTSTRAP_MAX_TTL_S} s",
                       ExitCode.USAGE)
    try:
        key = SigningKey.from_json(signing_key_file.read_text())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CliError(f"cannot read the signing key {signing_key_file}: {error}",
                       ExitCode.USAGE) from error
    return key.mint(Principal(subject, Role.ADMIN), ttl_s)[0]


def tokens_bootstrap(ctx: Context, args: argparse.Namespace) -> Result:
    ttl_s = args.ttl.seconds if args.ttl is not None else BOOTSTRAP_MAX_TTL_S
    token = bootstrap_token(args.signing_key, args.subject, ttl_s)
    return Result({"token": token, "ttl_s": ttl_s},
                  lambda console: console.print(token, soft_wrap=True))


def tokens_keygen(ctx: Context, args: argparse.Namespace) -> Result:
    """A new signing key file and its public key added to the key set file (made when
    missing): the first key, or the next one of a rotation."""
    if args.signing_key.exists():
        raise CliError(f"{args.signing_key} exists; give a new file", ExitCode.USAGE)
    key = SigningKey.generate(args.kid)
    keys = key.key_set()
    if args.key_set.exists():
        try:
            keys = KeySet.from_json(args.key_set.read_text()).merged(keys)
        except (ValueError, KeyError, TypeError) as error:
            raise CliError(f"cannot read the key set {args.key_set}: {error}",
                           ExitCode.USAGE) from error
    _write_private(args.signing_key, key.to_json())
    args.key_set.write_text(keys.to_json() + "\n")
    return Result({"kid": key.kid, "key_ids": sorted(keys.keys)}, lambda console: console.print(
        f"signing key {key.kid} in {args.signing_key}; key set {args.key_set}: "
        + ", ".join(sorted(keys.keys))))


def add_commands(b: Any, admin: Any) -> None:
    tokens = b.group(admin, "tokens", "API tokens, through the order service's token issuer "
                                      "(admin token)")
    p = b.leaf(tokens, "issue", tokens_issue, "sign a token and print it")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--subject", required=True, help="who holds it, e.g. alice@acme")
    p.add_argument("--tenant", help="the customer's tenant (role customer)")
    p.add_argument("--telco", choices=["sg", "cq"], help="the ops user's telco (role ops)")
    p.add_argument("--ttl", type=duration, help="lifetime, e.g. 30d (default: the issuer's)")
    p = b.leaf(tokens, "list", tokens_list, "the issued tokens (never the tokens themselves)")
    p.add_argument("--all", action="store_true", help="also revoked and expired ones")
    p = b.leaf(tokens, "rotate", tokens_rotate, "a new token for the same principal")
    p.add_argument("token_id")
    p.add_argument("--ttl", type=duration, help="lifetime of the new token")
    p.add_argument("--grace", type=duration,
                   help="how long the old token keeps working (at most 1h; default: none)")
    p = b.leaf(tokens, "revoke", tokens_revoke, "revoke a token in every service")
    p.add_argument("token_id")
    p = b.leaf(tokens, "bootstrap", tokens_bootstrap,
               "break-glass: sign a short-lived admin token offline with the signing key")
    p.add_argument("--signing-key", type=Path, required=True, metavar="FILE",
                   help="the issuer's signing key (IDC_TOKEN_SIGNING_KEY)")
    p.add_argument("--subject", default="bootstrap@ops", help="who uses it")
    p.add_argument("--ttl", type=duration, help="lifetime, at most 1h (default 1h)")
    p = b.leaf(tokens, "keygen", tokens_keygen,
               "make a signing key and add its public key to a key set (offline)")
    p.add_argument("--kid", required=True, help="the new key's id, e.g. 2026-12")
    p.add_argument("--signing-key", type=Path, required=True, metavar="FILE",
                   help="where to write the new signing key (IDC_TOKEN_SIGNING_KEY)")
    p.add_argument("--key-set", type=Path, required=True, metavar="FILE",
                   help="the key set to add its public key to (IDC_TOKEN_KEYS); made if missing")


@dataclass(frozen=True)
class DemoToken:
    """One of the tokens ``make run`` creates for trying the system."""

    name: str
    role: str
    subject: str
    tenant: str | None
    telco: str | None
    token: str = ""
    token_id: str = ""


DEMO_TENANT = "acme-sg"
DEMO_PRINCIPALS = (
    DemoToken("customer", Role.CUSTOMER.value, "alice@acme-sg", DEMO_TENANT, None),
    DemoToken("ops-sg", Role.OPS.value, "sam@sg-telco", None, "sg"),
    DemoToken("ops-cq", Role.OPS.value, "chen@cq-telco", None, "cq"),
    # A second Singapore operator: four eyes on a repair Singapore's ops requested.
    DemoToken("ops-sg-2", Role.OPS.value, "sue@sg-telco", None, "sg"),
    DemoToken("billing", Role.BILLING_ADMIN.value, "bea@billing", None, None),
    DemoToken("admin", Role.ADMIN.value, "root@ops", None, None),
    # A sandbox tenant of the catalogue (README "Sandbox"): its circuits go to the sandbox
    # routers and are never invoiced.
    DemoToken("sandbox", Role.CUSTOMER.value, "tess@sandbox-demo", "sandbox-demo", None),
)
# Demo tokens get the issuer's default lifetime and are issued again with less than this
# left.
DEMO_RENEW_S = 86_400


def ensure_demo_tokens(tokens_file: Path, signing_key_file: Path, order_address: str,
                       env: Mapping[str, str]) -> dict[str, DemoToken]:
    """The demo tokens, issued by the running order service: those ``tokens_file`` holds
    from an earlier start while the issuer lists them active for another day, else new ones.
    The devstack authenticates with a bootstrap token signed with its development key;
    ``env`` holds the client's TLS settings (IDC_TLS*)."""
    known: dict[str, dict[str, Any]] = {}
    if tokens_file.exists():
        known = {t["name"]: t for t in json.loads(tokens_file.read_text())}
    admin = bootstrap_token(signing_key_file, "devstack@ops", 300)
    api = Api(Connection.resolve({"order": order_address}, admin, 10.0, env))
    try:
        active = api.call("order", api.tokens.ListTokens, pb.ListTokensRequest()).tokens
        fresh = {t.token_id for t in active
                 if t.expire_time.ToSeconds() - time.time() > DEMO_RENEW_S}
        issued = {}
        for demo in DEMO_PRINCIPALS:
            earlier = known.get(demo.name, {})
            if earlier.get("token_id") in fresh:
                issued[demo.name] = DemoToken(**{**asdict(demo), "token": earlier["token"],
                                                 "token_id": earlier["token_id"]})
                continue
            reply = api.call("order", api.tokens.IssueToken, pb.IssueTokenRequest(
                subject=demo.subject, role=demo.role, tenant_id=demo.tenant or "",
                telco=demo.telco or ""))
            issued[demo.name] = DemoToken(**{**asdict(demo), "token": reply.token,
                                             "token_id": reply.info.token_id})
    finally:
        api.close()
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
