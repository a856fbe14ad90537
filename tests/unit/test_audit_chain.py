"""The audit hash chain per circuit: appended at commit, recomputed by `idcctl audit verify`
(first_mismatch); an edit or a deletion is the first mismatch; two writers on one circuit
do not fork its chain. (Signatures: tests/integration/cli/test_audit.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from idc.ops.v1 import audit_service_pb2 as pb
from services.cli.audit import first_mismatch
from services.common.audit_chain import AuditChain, ChainedKind, canonical
from services.common.db import make_engine, make_session_factory
from services.provisioning.audit import KINDS
from services.provisioning.tables import (
    AUDIT_CHAIN,
    AUDIT_CHAIN_HEADS,
    LogEntry,
    ProvisioningBase,
)

KEY = Ed25519PrivateKey.generate()


def factory(tmp_path: Path, kind: ChainedKind = KINDS[0]) -> tuple[sessionmaker[Session],
                                                                    AuditChain]:
    engine = make_engine(f"sqlite:///{tmp_path / 'chain.db'}")
    ProvisioningBase.metadata.create_all(engine)
    made = make_session_factory(engine)
    chain = AuditChain(AUDIT_CHAIN, AUDIT_CHAIN_HEADS, [kind], {"sg": KEY})
    chain.install(made)
    return made, chain


def log(made: sessionmaker[Session], circuit_id: str, message: str) -> None:
    with made() as session, session.begin():
        session.add(LogEntry(circuit_id=circuit_id, operation=1, step=1, router_name="sg-edge-1",
                             side=1, outcome=1, message=message, error=b"\x00\xff",
                             actor="pr-1"))


def entries(made: sessionmaker[Session], chain: AuditChain, circuit_id: str
            ) -> tuple[list[pb.ChainEntry], int, str]:
    with made() as session:
        links = chain.links(session, circuit_id, 0, 1000)
        head = chain.head(session, circuit_id)
    return [pb.ChainEntry(sequence=link.sequence, kind=link.kind, entry_id=link.entry_id,
                          content=link.content.decode() if link.content else "",
                          prev_hash=link.prev_hash, hash=link.hash,
                          signer_telco=link.signer_telco, signature=link.signature)
            for link in links], *head


def mismatch(made: sessionmaker[Session], chain: AuditChain, circuit_id: str) -> str:
    found = first_mismatch("provisioning", *entries(made, chain, circuit_id),
                           {"sg": KEY.public_key()})
    return str(found) if found else ""


def test_canonical_encoding_is_sorted_compact_json() -> None:
    encoded = canonical({"b": b"\x01", "a": "ü", "n": None})
    assert encoded == '{"a":"ü","b":"AQ==","n":null}'.encode()


def test_entries_are_chained_per_circuit_and_verify(tmp_path: Path) -> None:
    made, chain = factory(tmp_path)
    for n in range(3):
        log(made, "cct-a", f"step {n}")
    log(made, "cct-b", "other circuit")
    found, head_sequence, _ = entries(made, chain, "cct-a")
    assert [e.sequence for e in found] == [1, 2, 3] and head_sequence == 3
    assert found[1].prev_hash == found[0].hash
    assert mismatch(made, chain, "cct-a") == "" and mismatch(made, chain, "cct-b") == ""


def test_an_edited_entry_is_the_first_mismatch(tmp_path: Path) -> None:
    made, chain = factory(tmp_path)
    for n in range(3):
        log(made, "cct-a", f"step {n}")
    with made() as session, session.begin():
        second = session.scalars(select(LogEntry.id).order_by(LogEntry.id)).all()[1]
        session.execute(update(LogEntry).where(LogEntry.id == second).values(message="forged"))
    assert mismatch(made, chain, "cct-a").startswith(
        f"provisioning: sequence 2 (provisioning_log {second}): content differs")


def test_a_deleted_entry_and_a_deleted_last_link_are_found(tmp_path: Path) -> None:
    made, chain = factory(tmp_path)
    for n in range(3):
        log(made, "cct-a", f"step {n}")
    with made() as session, session.begin():
        first = session.scalars(select(LogEntry.id).order_by(LogEntry.id)).first()
        session.execute(delete(LogEntry).where(LogEntry.id == first))
    assert "sequence 1" in mismatch(made, chain, "cct-a")
    assert "gone" in mismatch(made, chain, "cct-a")

    made2, chain2 = factory(tmp_path / "two")
    for n in range(2):
        log(made2, "cct-a", f"step {n}")
    with made2() as session, session.begin():
        session.execute(delete(AUDIT_CHAIN).where(AUDIT_CHAIN.c.seq == 2))
    # The entry is now in no link, and the head is past the last link.
    assert "in no chain link" in mismatch(made2, chain2, "cct-a")


@pytest.mark.parametrize("writers", [4])
def test_two_writers_on_one_circuit_do_not_fork_its_chain(tmp_path: Path, writers: int) -> None:
    made, chain = factory(tmp_path)
    def write(n: int) -> None:
        for i in range(5):
            log(made, "cct-a", f"{n}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    found, head_sequence, _ = entries(made, chain, "cct-a")
    assert [e.sequence for e in found] == list(range(1, writers * 5 + 1)) == \
        list(range(1, head_sequence + 1))
    assert mismatch(made, chain, "cct-a") == ""
