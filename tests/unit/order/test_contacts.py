"""Contacts sealed at rest (AES-GCM, rotating key set) and who may read them."""

from __future__ import annotations

import base64
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.common.auth import Principal, Role
from services.common.config import ConfigError
from services.order.contacts import (
    DEV_KEYS_FILE,
    ContactCipher,
    ContactKeySet,
    ContactsUnreadable,
    SealedContacts,
    load_key_set,
    parse_key_set,
)
from services.order.disclosure import billing_telcos
from services.order.domain.catalogue import load_catalogue
from services.order.domain.disclosure import may_see_contacts

ANN = [{"role": "noc", "name": "Ann Lee", "email": "ann@acme.example", "phone": "+6561234567"}]


def key_json(active: str, *ids: str) -> str:
    return json.dumps({"active": active, "keys": {
        i: base64.b64encode(os.urandom(32)).decode() for i in ids}})


def test_sealed_contacts_open_with_their_row_and_hold_no_plaintext() -> None:
    cipher = ContactCipher(ContactKeySet.generate("k1"))
    sealed = cipher.seal("ord-1", ANN)
    assert sealed.key_id == "k1" and len(sealed.nonce) == 12
    assert b"Ann" not in sealed.ciphertext and b"acme" not in sealed.ciphertext
    assert cipher.open("ord-1", sealed) == ANN
    # Every seal takes a new nonce.
    assert cipher.seal("ord-1", ANN).nonce != sealed.nonce


def test_a_ciphertext_moved_to_another_row_does_not_open() -> None:
    cipher = ContactCipher(ContactKeySet.generate("k1"))
    sealed = cipher.seal("ord-1", ANN)
    with pytest.raises(ContactsUnreadable, match="another row"):
        cipher.open("ord-2", sealed)
    tampered = SealedContacts(sealed.key_id, sealed.nonce,
                              bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:])
    with pytest.raises(ContactsUnreadable):
        cipher.open("ord-1", tampered)


def test_rotation_old_rows_open_with_their_key_new_ones_use_the_active_key() -> None:
    old = ContactKeySet.generate("2026-11")
    sealed_before = ContactCipher(old).seal("ord-1", ANN)
    rotated = ContactKeySet("2026-12", {**old.keys, "2026-12": os.urandom(32)})
    cipher = ContactCipher(rotated)
    assert cipher.open("ord-1", sealed_before) == ANN
    assert cipher.seal("ord-2", ANN).key_id == "2026-12"
    # Once the old key is dropped from the set, a row not re-encrypted says so.
    dropped = ContactCipher(ContactKeySet("2026-12", {"2026-12": rotated.keys["2026-12"]}))
    with pytest.raises(ContactsUnreadable, match="2026-11"):
        dropped.open("ord-1", sealed_before)


@pytest.mark.parametrize(("text", "problem"), [
    ("not json", "not JSON"),
    ('{"active": "a", "keys": {"a": "AAAA"}}', "has 3 bytes"),
    ('{"active": "a", "keys": {"a": "%%%"}}', "not base64"),
    ('{"active": "b", "keys": {}}', "active must name"),
    ('{"active": "a b", "keys": {"a b": "AAAA"}}', "key id"),
])
def test_a_malformed_key_set_is_refused_without_showing_a_key(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_key_set(text)


def test_the_key_set_comes_from_the_file_or_the_variable_never_both(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(key_json("b", "a", "b"))
    assert load_key_set({"IDC_ORDER_CONTACT_KEYS_FILE": str(path)}).active == "b"
    assert load_key_set({"IDC_ORDER_CONTACT_KEYS": key_json("a", "a")}).active == "a"
    with pytest.raises(ConfigError, match="not both"):
        load_key_set({"IDC_ORDER_CONTACT_KEYS_FILE": str(path),
                      "IDC_ORDER_CONTACT_KEYS": key_json("a", "a")})
    with pytest.raises(ConfigError, match="IDC_ORDER_CONTACT_KEYS_FILE: cannot read"):
        load_key_set({"IDC_ORDER_CONTACT_KEYS_FILE": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="IDC_ORDER_CONTACT_KEYS: active"):
        load_key_set({"IDC_ORDER_CONTACT_KEYS": '{"active": "x", "keys": {}}'})


def test_without_a_key_set_only_the_explicit_development_mode_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"IDC_ORDER_CONTACT_KEYS_FILE .*IDC_DEV_MODE=true"):
        load_key_set({"IDC_VAR_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="IDC_DEV_MODE"):
        load_key_set({"IDC_DEV_MODE": "false", "IDC_VAR_DIR": str(tmp_path)})
    env = {"IDC_DEV_MODE": "true", "IDC_VAR_DIR": str(tmp_path / "var")}
    first = load_key_set(env)
    path = tmp_path / "var" / DEV_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_set(env) == first  # generated once, then reused


def test_contacts_are_for_the_tenant_and_the_ops_of_its_billing_telco_only() -> None:
    customer = Principal("ann@acme", Role.CUSTOMER, tenant="acme")
    other_customer = Principal("bob@globex", Role.CUSTOMER, tenant="globex")
    sg_ops = Principal("olga@sg", Role.OPS, telco="sg")
    cq_ops = Principal("chen@cq", Role.OPS, telco="cq")
    assert may_see_contacts(customer, "acme", "sg")
    assert not may_see_contacts(other_customer, "acme", "sg")
    assert may_see_contacts(sg_ops, "acme", "sg")
    assert not may_see_contacts(cq_ops, "acme", "sg")
    assert may_see_contacts(cq_ops, "yangtze-cq", "cq")
    assert not may_see_contacts(sg_ops, "acme", None)
    for staff in (Principal("bill@idc", Role.BILLING_ADMIN), Principal("root", Role.ADMIN)):
        assert not may_see_contacts(staff, "acme", "sg")


def test_the_billing_telco_of_a_tenant_is_its_billing_entitys() -> None:
    billing_telco = billing_telcos(load_catalogue())
    assert billing_telco("acme-sg") == "sg"
    assert billing_telco("yangtze-cq") == "cq"
    assert billing_telco("unlisted-tenant") == "sg"  # the default entity's


def test_a_billing_entity_naming_an_unknown_telco_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entities = Path(__file__).parents[3] / "services/billing/data/billing_entities.toml"
    path = tmp_path / "entities.toml"
    path.write_text(entities.read_text().replace('telco = "cq"', 'telco = "hk"'))
    monkeypatch.setenv("IDC_BILLING_ENTITIES_FILE", str(path))
    with pytest.raises(ConfigError, match=r"IDC_BILLING_ENTITIES_FILE: .*cq-telco.*'hk'"):
        billing_telcos(load_catalogue())


def test_processes_starting_at_once_in_dev_mode_share_one_key_set(tmp_path: Path) -> None:
    env = {"IDC_DEV_MODE": "true", "IDC_VAR_DIR": str(tmp_path)}
    with ThreadPoolExecutor(8) as pool:
        sets = list(pool.map(lambda _: load_key_set(env), range(16)))
    assert all(s == sets[0] for s in sets)
    assert [p.name for p in tmp_path.iterdir()] == [DEV_KEYS_FILE]
