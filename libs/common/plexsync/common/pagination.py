"""Opaque, validated page tokens and page sizes (AIP-158) shared by every List RPC.

A token encodes the sort key of the last row returned (keyset pagination), so pages stay stable while
rows are written concurrently, plus a fingerprint of the request's filters so a token cannot be replayed
against a different query.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from plexsync.common.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """Validate a requested page size: 0 means the default; negative or above the maximum is an error."""
    if requested < 0 or requested > maximum:
        raise InvalidArgumentError.single("page_size", f"must be between 0 and {maximum}, got {requested}")
    return requested or default


def filters_fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def encode_token(last_key: list[Any], fingerprint: str) -> str:
    raw = json.dumps({"k": last_key, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, fingerprint: str) -> list[Any] | None:
    """The last key of the previous page, or None for the first page; INVALID_ARGUMENT for a bad token."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = data["k"]
        if not isinstance(key, list) or data["f"] != fingerprint:
            raise ValueError
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError.single(
            "page_token", "is not a token returned by this method with the same filters; start without one"
        ) from exc
    return key
