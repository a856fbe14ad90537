"""Customer contacts encrypted at rest: AES-256-GCM with a key set that rotates.

A key set is a JSON document ``{"active": "<key id>", "keys": {"<key id>": "<base64 of 32
bytes>", ...}}``, from ``IDC_ORDER_CONTACT_KEYS_FILE`` (a mounted secret) or
``IDC_ORDER_CONTACT_KEYS`` (the document itself). New contacts are sealed with the active
key; the key id and the 96-bit nonce are stored beside the ciphertext, so older rows open
with the key they were sealed with until ``idcctl admin contacts reencrypt`` moves them to
the active one. The associated data is the order id: a ciphertext copied onto another row
does not open there.

Without a key set the service refuses to start, unless ``IDC_DEV_MODE=true``: then a key set
is generated once under ``IDC_VAR_DIR`` (``order-contact-keys.json``) and reused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.config import ConfigError, boolean

KEYS_ENV = "IDC_ORDER_CONTACT_KEYS"
KEYS_FILE_ENV = "IDC_ORDER_CONTACT_KEYS_FILE"
DEV_MODE_ENV = "IDC_DEV_MODE"
DEV_KEYS_FILE = "order-contact-keys.json"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID = re.compile(r"\A[A-Za-z0-9._-]{1,32}\Z")
# Versioned, so a later change of what is bound cannot be confused with this one.
_AAD_PREFIX = b"idc.order.contacts.v1\0"


class ContactsUnreadable(Exception):
    """A stored ciphertext does not open: unknown key id, wrong key, or not this row's."""


@dataclass(frozen=True)
class ContactKeySet:
    active: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError(f"the active key {self.active!r} is not in the key set")

    def to_json(self) -> str:
        return json.dumps({"active": self.active, "keys": {
            key_id: base64.b64encode(key).decode() for key_id, key in self.keys.items()}},
            indent=2)

    @classmethod
    def generate(cls, key_id: str = "dev-1") -> ContactKeySet:
        return cls(key_id, {key_id: AESGCM.generate_key(bit_length=KEY_BYTES * 8)})


def parse_key_set(text: str) -> ContactKeySet:
    """The key set of a JSON document; ValueError says what is wrong (never a key)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise ValueError('expected {"active": "<key id>", "keys": {"<key id>": "<base64>"}}')
    keys: dict[str, bytes] = {}
    for key_id, encoded in data["keys"].items():
        if not KEY_ID.match(key_id):
            raise ValueError(f"key id {key_id!r}: 1 to 32 letters, digits or . _ -")
        try:
            key = base64.b64decode(str(encoded), validate=True)
        except binascii.Error:
            raise ValueError(f"key {key_id!r} is not base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {key_id!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        keys[key_id] = key
    active = data.get("active")
    if not isinstance(active, str) or active not in keys:
        raise ValueError(f"active must name one of the keys ({', '.join(sorted(keys))})")
    return ContactKeySet(active, keys)


def load_key_set(env: Mapping[str, str] | None = None) -> ContactKeySet:
    """The contact key set the settings name; ConfigError naming the variable otherwise."""
    env = os.environ if env is None else env
    inline, path = env.get(KEYS_ENV, "").strip(), env.get(KEYS_FILE_ENV, "").strip()
    if inline and path:
        raise ConfigError(f"set {KEYS_ENV} or {KEYS_FILE_ENV}, not both")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{KEYS_FILE_ENV}: cannot read {path}: {error.strerror}") from None
        return _parsed(text, KEYS_FILE_ENV)
    if inline:
        return _parsed(inline, KEYS_ENV)
    if boolean(env, DEV_MODE_ENV, False):
        return _dev_key_set(Path(env.get("IDC_VAR_DIR", "").strip() or "var"))
    raise ConfigError(
        f"{KEYS_FILE_ENV} (or {KEYS_ENV}) is not set: the order service encrypts customer "
        f"contacts and needs a key set; set {DEV_MODE_ENV}=true on a development machine "
        "to have one generated under var/")


def _parsed(text: str, variable: str) -> ContactKeySet:
    try:
        return parse_key_set(text)
    except ValueError as error:
        raise ConfigError(f"{variable}: {error}") from None


def _dev_key_set(var_dir: Path) -> ContactKeySet:
    path = var_dir / DEV_KEYS_FILE
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        # Written whole under a name of its own, then linked into place: processes starting
        # at once (several order services on one var/) all read the one key set that won.
        draft = var_dir / f".{DEV_KEYS_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(ContactKeySet.generate().to_json())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return _parsed(path.read_text(encoding="utf-8"), f"{DEV_MODE_ENV} key set {path}")


@dataclass(frozen=True)
class SealedContacts:
    """What the ``orders`` row holds: ciphertext with the key id and nonce beside it."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def columns(self) -> dict[str, object]:
        return {"contacts_key_id": self.key_id, "contacts_nonce": self.nonce,
                "contacts_ciphertext": self.ciphertext}


def _aad(order_id: str) -> bytes:
    return _AAD_PREFIX + order_id.encode()


class ContactCipher:
    def __init__(self, keys: ContactKeySet) -> None:
        self.keys = keys
        self._aead = {key_id: AESGCM(key) for key_id, key in keys.keys.items()}

    @property
    def active_key_id(self) -> str:
        return self.keys.active

    def seal(self, order_id: str, contacts: list[dict[str, str]]) -> SealedContacts:
        nonce = secrets.token_bytes(NONCE_BYTES)  # random 96 bits per row, never reused
        plaintext = json.dumps(contacts, separators=(",", ":"), sort_keys=True).encode()
        return SealedContacts(self.keys.active, nonce,
                              self._aead[self.keys.active].encrypt(nonce, plaintext,
                                                                   _aad(order_id)))

    def open(self, order_id: str, sealed: SealedContacts) -> list[dict[str, str]]:
        aead = self._aead.get(sealed.key_id)
        if aead is None:
            raise ContactsUnreadable(
                f"contacts of order {order_id} are sealed with key {sealed.key_id!r}, which "
                f"is not in the key set (keys: {', '.join(sorted(self._aead))})")
        try:
            plaintext = aead.decrypt(sealed.nonce, sealed.ciphertext, _aad(order_id))
        except InvalidTag:
            raise ContactsUnreadable(
                f"contacts of order {order_id} do not open with key {sealed.key_id!r} (a "
                "wrong key, or a ciphertext that belongs to another row)") from None
        contacts: list[dict[str, str]] = json.loads(plaintext)
        return contacts
