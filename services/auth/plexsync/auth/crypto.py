"""Plex tokens encrypted at rest: AES-256-GCM under named keys, with associated data binding each ciphertext
to its row.

Keys come from ``PLEXSYNC_TOKEN_KEYS="kid1:base64key,kid2:base64key"``: the first (primary) key encrypts, every
key decrypts, and each ciphertext records the id of the key that made it, so a new key can be put first, the
stored tokens re-encrypted (``python -m plexsync.auth rotate-keys``) and the old key removed afterwards.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
KEY_BYTES = 32
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyConfigError(ValueError):
    """PLEXSYNC_TOKEN_KEYS is missing or malformed. The message never contains key material."""


class TokenDecryptionError(Exception):
    """A stored ciphertext cannot be decrypted: unknown key id, wrong key, or tampered/moved data."""


@dataclass(frozen=True)
class Sealed:
    """A ciphertext as stored: the key id, the nonce and the AES-GCM output (ciphertext + tag)."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


class TokenCipher:
    """Encrypts under the primary key; decrypts under whichever key a ciphertext names."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyConfigError("PLEXSYNC_TOKEN_KEYS has no key")
        self._keys: dict[str, AESGCM] = {}
        for kid, key in keys:
            if kid in self._keys:
                raise KeyConfigError(f"PLEXSYNC_TOKEN_KEYS names key id {kid!r} twice")
            if len(key) != KEY_BYTES:
                raise KeyConfigError(
                    f"PLEXSYNC_TOKEN_KEYS key {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                    "(generate one with: python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')"
                )
            self._keys[kid] = AESGCM(key)
        self.primary_key_id = keys[0][0]

    @classmethod
    def from_env_value(cls, raw: str) -> TokenCipher:
        return cls(parse_keys(raw))

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: str, associated_data: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._keys[self.primary_key_id].encrypt(nonce, plaintext.encode(), associated_data)
        return Sealed(self.primary_key_id, nonce, ciphertext)

    def decrypt(self, sealed: Sealed, associated_data: bytes) -> str:
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise TokenDecryptionError(
                f"a stored token is encrypted under key id {sealed.key_id!r}, which is not in PLEXSYNC_TOKEN_KEYS "
                f"(configured: {', '.join(self._keys)}); add that key back (after the primary) and restart"
            )
        try:
            return aead.decrypt(sealed.nonce, sealed.ciphertext, associated_data).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise TokenDecryptionError(
                f"a stored token does not decrypt under key id {sealed.key_id!r}: the key configured under that id "
                "in PLEXSYNC_TOKEN_KEYS is not the one the token was encrypted with (or the row was tampered with)"
            ) from None

    def needs_rotation(self, sealed: Sealed) -> bool:
        return sealed.key_id != self.primary_key_id


def parse_keys(raw: str) -> list[tuple[str, bytes]]:
    """Parse ``kid:base64key,...``; errors name the offending entry by position and key id, never the key."""
    raw = raw.strip()
    if not raw:
        raise KeyConfigError(
            "PLEXSYNC_TOKEN_KEYS is not set: set it to 'kid:base64key' with a 32-byte key (e.g. from a Kubernetes "
            "Secret); tokens are encrypted with it"
        )
    keys: list[tuple[str, bytes]] = []
    for position, entry in enumerate(raw.split(","), start=1):
        kid, sep, encoded = entry.strip().partition(":")
        kid = kid.strip()
        if not sep or not _KID.match(kid):
            raise KeyConfigError(
                f"PLEXSYNC_TOKEN_KEYS entry {position} must look like 'kid:base64key' with a key id of letters, "
                "digits, '.', '_' or '-'"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            try:
                key = base64.urlsafe_b64decode(encoded.strip())
            except (binascii.Error, ValueError):
                raise KeyConfigError(f"PLEXSYNC_TOKEN_KEYS key {kid!r} is not valid base64") from None
        keys.append((kid, key))
    return keys


def token_aad(token_id: str) -> bytes:
    """Associated data binding a token ciphertext to its row: copying it to another row makes it undecryptable."""
    return f"plexsync.auth.tokens/{token_id}/v1".encode()


def new_key() -> str:
    """A fresh base64 AES-256 key (for operators and tests)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()
