"""Protected health information at rest: AES-256-GCM field encryption and keyed look-up hashes.

Each encrypted value names the key that sealed it (`enc1:<key id>:<base64 nonce+ciphertext>`), so
keys can be rotated: new values use the active key, old ones stay readable until `portal keys
rotate` re-encrypts them. The associated data binds a value to its table, column and row, so a
ciphertext copied into another row or column does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import get_settings

PREFIX = "enc1"


class PhiKeyError(RuntimeError):
    pass


def _decode_key(text: str) -> bytes:
    key = base64.b64decode(text)
    if len(key) != 32:
        raise PhiKeyError("PHI keys must be 32 bytes (AES-256), base64-encoded")
    return key


@dataclass(frozen=True)
class PhiKeys:
    keys: dict[str, bytes]
    active_key_id: str
    hash_key: bytes

    @classmethod
    def parse(cls, keys: str, active_key_id: str, hash_key: str) -> PhiKeys:
        """`keys` is `id:base64key[,id:base64key...]`."""
        parsed: dict[str, bytes] = {}
        for item in keys.split(","):
            key_id, sep, material = item.strip().partition(":")
            if not sep or not key_id.isalnum():
                raise PhiKeyError("PHI_ENCRYPTION_KEYS must look like `id:base64key,...`")
            parsed[key_id] = _decode_key(material)
        if active_key_id not in parsed:
            raise PhiKeyError(f"PHI_ACTIVE_KEY_ID {active_key_id!r} is not in PHI_ENCRYPTION_KEYS")
        return cls(keys=parsed, active_key_id=active_key_id, hash_key=_decode_key(hash_key))


@lru_cache
def phi_keys() -> PhiKeys:
    settings = get_settings()
    return PhiKeys.parse(
        settings.phi_encryption_keys, settings.phi_active_key_id, settings.phi_hash_key
    )


def _aad(context: str) -> bytes:
    return context.encode()


def encrypt(plaintext: str, context: str, keys: PhiKeys | None = None) -> str:
    keys = keys or phi_keys()
    nonce = os.urandom(12)
    sealed = AESGCM(keys.keys[keys.active_key_id]).encrypt(nonce, plaintext.encode(), _aad(context))
    blob = base64.b64encode(nonce + sealed).decode()
    return f"{PREFIX}:{keys.active_key_id}:{blob}"


def key_id_of(value: str) -> str:
    prefix, key_id, _ = value.split(":", 2)
    if prefix != PREFIX:
        raise PhiKeyError("not an encrypted value")
    return key_id


def reseal(value: str, context: str) -> str | None:
    """`value` sealed by the active key, or None when it already is (key rotation)."""
    if key_id_of(value) == phi_keys().active_key_id:
        return None
    return encrypt(decrypt(value, context), context)


def decrypt(value: str, context: str, keys: PhiKeys | None = None) -> str:
    keys = keys or phi_keys()
    key_id = key_id_of(value)
    if key_id not in keys.keys:
        raise PhiKeyError(f"PHI key {key_id!r} is not configured")
    raw = base64.b64decode(value.split(":", 2)[2])
    try:
        return AESGCM(keys.keys[key_id]).decrypt(raw[:12], raw[12:], _aad(context)).decode()
    except InvalidTag as exc:
        raise PhiKeyError(f"a PHI value does not belong to {context}") from exc


def lookup_hash(normalised: str, keys: PhiKeys | None = None) -> str:
    """A keyed hash (HMAC-SHA-256) for equality look-ups without decrypting."""
    keys = keys or phi_keys()
    return hmac.new(keys.hash_key, normalised.encode(), hashlib.sha256).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()
