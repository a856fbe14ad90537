"""``idcctl audit verify CIRCUIT_ID``: recompute a circuit's audit chains from the order and
provisioning services' records (their AuditService, ops or admin token) and report the
first entry that does not match, or "chain intact".

Per service, link by link: the sequence follows on (a gap is a deleted link), prev_hash is
the previous link's hash, the entry still exists, sha256(canonical(entry) + prev_hash) is
the link's hash (an edited entry differs), and an approval decision carries a valid
signature by the key of the telco it is for (IDC_AUDIT_PUBLIC_KEY_DIR). The last link is
the recorded head; an entry of the circuit in no link is reported too.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from idc.ops.v1 import audit_service_pb2 as pb
from services.cli.commands import Context
from services.cli.errors import ExitCode
from services.cli.render import Result
from services.common.audit_chain import GENESIS, canonical, link_hash
from services.common.audit_keys import PUBLIC_DIR, AuditKeySettings, public_keys

SERVICES = ("order", "provisioning")
SIGNED_KINDS = {"approval"}


@dataclass(frozen=True)
class Mismatch:
    service: str
    sequence: int
    entry: str  # "kind id"
    what: str

    def __str__(self) -> str:
        at = f"sequence {self.sequence}" if self.sequence else "outside the chain"
        return f"{self.service}: {at} ({self.entry}): {self.what}"


def first_mismatch(service: str, entries: list[pb.ChainEntry], head_sequence: int,
                   head_hash: str, keys: Mapping[str, Ed25519PublicKey]) -> Mismatch | None:
    """The first entry of one service's chain that does not match, or None."""
    expected, prev = 1, GENESIS
    for entry in entries:
        name = f"{entry.kind} {entry.entry_id}"
        if entry.sequence == 0:
            return Mismatch(service, 0, name, "this entry of the circuit is in no chain link "
                            "(written behind the chain's back)")
        if entry.sequence != expected:
            return Mismatch(service, expected, "?", f"link {expected} is missing (deleted); "
                            f"the next is {entry.sequence}")
        problem = _link_problem(entry, prev, keys)
        if problem:
            return Mismatch(service, entry.sequence, name, problem)
        expected, prev = expected + 1, entry.hash
    if head_sequence != expected - 1 or (head_sequence and head_hash != prev):
        return Mismatch(service, head_sequence, "?", f"the chain head is link {head_sequence} "
                        f"but the last link is {expected - 1} (deleted at the end)")
    return None


def _link_problem(entry: pb.ChainEntry, prev: str, keys: Mapping[str, Ed25519PublicKey]
                  ) -> str:
    """What is wrong with one link and its entry ("" when it matches)."""
    if entry.prev_hash != prev:
        return f"prev_hash {entry.prev_hash[:16]} is not the previous link's hash {prev[:16]}"
    if not entry.content:
        return "the entry is gone (deleted)"
    fields = json.loads(entry.content)
    content = canonical(fields)
    recomputed = link_hash(content, entry.prev_hash)
    if recomputed != entry.hash:
        return (f"content differs from what was chained: now {entry.content} "
                f"(hash {recomputed[:16]}, chained {entry.hash[:16]})")
    return _signature_problem(entry, fields, content, keys) if entry.kind in SIGNED_KINDS else ""


def _signature_problem(entry: pb.ChainEntry, fields: Mapping[str, Any], content: bytes,
                       keys: Mapping[str, Ed25519PublicKey]) -> str:
    telco = str(fields.get("telco_id", ""))
    if entry.signer_telco != telco:
        return f"signed by telco {entry.signer_telco or 'nobody'}, the decision is telco {telco}'s"
    key = keys.get(telco)
    if key is None:
        return f"no public key of telco {telco} to check its signature"
    try:
        key.verify(base64.b64decode(entry.signature), content)
    except (InvalidSignature, ValueError):
        return f"the signature does not verify with telco {telco}'s key (forged or altered)"
    return ""


def _entries(ctx: Context, service: str, circuit_id: str
             ) -> tuple[list[pb.ChainEntry], int, str]:
    found: list[pb.ChainEntry] = []
    token = ""
    reply: Any = None
    while reply is None or token:
        reply = ctx.api.call(service, ctx.api.audit(service).ListChainEntries,
                             pb.ListChainEntriesRequest(circuit_id=circuit_id, page_token=token))
        found += reply.entries
        token = reply.next_page_token
    return found, reply.head_sequence, reply.head_hash


def _chains(ctx: Context, circuit_id: str) -> Iterator[tuple[str, list[pb.ChainEntry], int, str]]:
    for service in SERVICES:
        yield (service, *_entries(ctx, service, circuit_id))


def verify(ctx: Context, args: argparse.Namespace) -> Result:
    keys = public_keys(AuditKeySettings.from_env(PUBLIC_DIR))
    total, mismatch = 0, None
    counts = {}
    for service, entries, head_sequence, head_hash in _chains(ctx, args.circuit_id):
        counts[service] = len(entries)
        total += len(entries)
        mismatch = mismatch or first_mismatch(service, entries, head_sequence, head_hash, keys)
    if mismatch is None:
        data = {"intact": True, "entries": total, "per_service": counts}
        return Result(data, lambda console: console.print(f"chain intact, {total} entries"))
    data = {"intact": False, "service": mismatch.service, "sequence": mismatch.sequence,
            "entry": mismatch.entry, "what": mismatch.what}

    def show(console: Console) -> None:
        console.print(f"chain broken: {mismatch}", markup=False, highlight=False,
                      soft_wrap=True)

    return Result(data, show, exit_code=ExitCode.TAMPERED)


def add_commands(b: Any, roles: Any) -> None:
    audit = b.group(roles, "audit", "the tamper-evident audit (ops or admin token)")
    p = b.leaf(
        audit, "verify", verify, "recompute a circuit's audit chains and report the first "
        "entry that does not match",
        "Recompute the circuit's hash chains in the order and provisioning services (their\n"
        "AuditService) and check each telco's approval signatures with the public keys in\n"
        f"{PUBLIC_DIR} (IDC_DEV_MODE=true: var/audit-keys). Exit status 9 on a mismatch.",
    )
    p.add_argument("circuit_id")
