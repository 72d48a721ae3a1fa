"""Page tokens are signed (AIP-158): a made-up, altered, replayed or other deployment's token is refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from plexsync.common import pagination
from plexsync.common.config import CommonSettings
from plexsync.common.errors import InvalidArgumentError

FP = pagination.filters_fingerprint("items", "lib-1")


@pytest.fixture(autouse=True)
def _restore_key() -> Iterator[None]:
    saved = pagination._key
    yield
    pagination.configure_token_key(saved)


def _refused(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        pagination.decode_token(token, FP)
    assert [v.field for v in info.value.violations] == ["page_token"]


def test_round_trip_and_unsigned_tokens_refused() -> None:
    token = pagination.encode_token(["2024-01-01", 42], FP)
    assert pagination.decode_token(token, FP) == ["2024-01-01", 42]
    assert "2024-01-01" not in token  # opaque: not the plain key
    # The format before signing (base64 JSON) and a made-up key in it, as a client would forge one.
    forged = base64.urlsafe_b64encode(json.dumps({"k": ["9999"], "f": FP}).encode()).decode().rstrip("=")
    for bad in (forged, "p1." + forged, "p1.", "p1.%%%", "garbage", token[:-2], token + "A"):
        _refused(bad)


def test_altered_payload_refused() -> None:
    token = pagination.encode_token(["a"], FP)
    data = bytearray(base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4)))
    mac, payload = bytes(data[:16]), bytes(data[16:])
    altered = payload.replace(b'"a"', b'"z"')
    assert altered != payload
    _refused("p1." + base64.urlsafe_b64encode(mac + altered).decode().rstrip("="))


def test_other_deployment_or_service_key_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "scanner:tok-a-123456,cli:tok-b-123456")
    ours = CommonSettings()
    pagination.configure_token_key(pagination.token_key(ours, "catalog"))
    token = pagination.encode_token(["a"], FP)
    # Another replica of the same service (same tokens, listed in any order) accepts it.
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "cli:tok-b-123456, scanner:tok-a-123456")
    pagination.configure_token_key(pagination.token_key(CommonSettings(), "catalog"))
    assert pagination.decode_token(token, FP) == ["a"]
    # Another service, or another deployment, does not.
    pagination.configure_token_key(pagination.token_key(ours, "auth"))
    _refused(token)
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "scanner:tok-other-1234,cli:tok-b-123456")
    pagination.configure_token_key(pagination.token_key(CommonSettings(), "catalog"))
    _refused(token)


def test_explicit_key_wins_over_derived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "scanner:tok-a-123456")
    derived = pagination.token_key(CommonSettings(), "catalog")
    monkeypatch.setenv("PLEXSYNC_PAGE_TOKEN_KEY", "a-long-random-deployment-key")
    explicit = pagination.token_key(CommonSettings(), "catalog")
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "scanner:tok-rotated-99")
    assert pagination.token_key(CommonSettings(), "catalog") == explicit != derived
    with pytest.raises(ValueError):
        pagination.configure_token_key(b"short")


def test_other_filters_refused() -> None:
    token = pagination.encode_token(["a"], pagination.filters_fingerprint("items", "lib-2"))
    _refused(token)
