"""Opaque, signed page tokens and page sizes (AIP-158) shared by every List RPC.

A token encodes the sort key of the last row returned (keyset pagination), so pages stay stable while
rows are written concurrently, plus a fingerprint of the request's filters so a token cannot be replayed
against a different query. Tokens are HMAC-signed with a key every replica of a service shares (see
`token_key`), so a made-up or altered token is INVALID_ARGUMENT instead of a silently different page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from plexsync.common.config import CommonSettings
from plexsync.common.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_VERSION = "p1."
_MAC_BYTES = 16
_DERIVATION_LABEL = b"plexsync page tokens v1"

# Until a service configures its shared key (ServiceApp does at start-up), tokens are signed with a key of this
# process only: they work within one process and never across replicas.
_key: bytes = secrets.token_bytes(32)


def token_key(settings: CommonSettings, service: str) -> bytes:
    """The signing key of `service`'s page tokens.

    PLEXSYNC_PAGE_TOKEN_KEY when set; otherwise derived from PLEXSYNC_SERVICE_TOKENS, a secret every replica of
    a service already shares, so tokens work across replicas without new configuration. Changing the service
    tokens (a rotation) then invalidates outstanding page tokens: callers restart their listing, which AIP-158
    allows; set PLEXSYNC_PAGE_TOKEN_KEY to keep them valid across rotations."""
    explicit = settings.page_token_key.get_secret_value()
    entries = sorted(e.strip() for e in settings.service_tokens.get_secret_value().split(",") if e.strip())
    secret = explicit.encode() if explicit else "\n".join(entries).encode()
    return hmac.new(_DERIVATION_LABEL, service.encode() + b"\0" + secret, hashlib.sha256).digest()


def configure_token_key(key: bytes) -> None:
    """Sign and verify this process's page tokens with `key` (called once by ServiceApp)."""
    global _key
    if len(key) < 16:
        raise ValueError("a page token key needs at least 16 bytes")
    _key = key


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The page size to use: 0 means the default, above the maximum is lowered to it (AIP-158), negative is
    an error."""
    if requested < 0:
        raise InvalidArgumentError.single("page_size", f"must not be negative, got {requested}")
    return min(requested, maximum) or default


def filters_fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _mac(payload: bytes) -> bytes:
    return hmac.new(_key, _VERSION.encode() + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_token(last_key: list[Any], fingerprint: str) -> str:
    payload = json.dumps({"k": last_key, "f": fingerprint}, separators=(",", ":")).encode()
    return _VERSION + base64.urlsafe_b64encode(_mac(payload) + payload).decode().rstrip("=")


def decode_token(token: str, fingerprint: str) -> list[Any] | None:
    """The last key of the previous page, or None for the first page; INVALID_ARGUMENT for a token this service
    did not sign, or signed for other filters."""
    if not token:
        return None
    try:
        if not token.startswith(_VERSION):
            raise ValueError("unknown version")
        body = token[len(_VERSION) :]
        data = base64.urlsafe_b64decode((body + "=" * (-len(body) % 4)).encode())
        mac, payload = data[:_MAC_BYTES], data[_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, _mac(payload)):
            raise ValueError("bad signature")
        decoded = json.loads(payload)
        key = decoded["k"]
        if not isinstance(key, list) or decoded["f"] != fingerprint:
            raise ValueError("other filters")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidArgumentError.single(
            "page_token", "is not a token returned by this method with the same filters; start without one"
        ) from exc
    return key
