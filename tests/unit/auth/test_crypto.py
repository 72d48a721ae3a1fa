"""Token encryption: AES-GCM round trip, key ids, rotation, associated data, key configuration errors."""

from __future__ import annotations

import base64
import os

import pytest
from plexsync.auth.crypto import (
    KeyConfigError,
    Sealed,
    TokenCipher,
    TokenDecryptionError,
    new_key,
    parse_keys,
    token_aad,
)

AAD = token_aad("row-1")


def keys(*kids: str) -> str:
    return ",".join(f"{kid}:{new_key()}" for kid in kids)


def test_round_trip_tags_ciphertext_with_primary_key_id() -> None:
    cipher = TokenCipher.from_env_value(keys("k2", "k1"))
    sealed = cipher.encrypt("plex-token-value", AAD)
    assert sealed.key_id == "k2"
    assert b"plex-token-value" not in sealed.ciphertext
    assert len(sealed.nonce) == 12
    assert cipher.decrypt(sealed, AAD) == "plex-token-value"


def test_nonces_are_fresh() -> None:
    cipher = TokenCipher.from_env_value(keys("k1"))
    assert cipher.encrypt("t", AAD).nonce != cipher.encrypt("t", AAD).nonce


def test_old_key_still_decrypts_after_a_new_primary_is_added() -> None:
    old = f"k1:{new_key()}"
    sealed = TokenCipher.from_env_value(old).encrypt("secret", AAD)
    rotated = TokenCipher.from_env_value(f"k2:{new_key()},{old}")
    assert rotated.decrypt(sealed, AAD) == "secret"
    assert rotated.needs_rotation(sealed)
    again = rotated.encrypt(rotated.decrypt(sealed, AAD), AAD)
    assert again.key_id == "k2" and not rotated.needs_rotation(again)


def test_unknown_key_id_is_a_clear_error() -> None:
    sealed = TokenCipher.from_env_value(keys("gone")).encrypt("secret", AAD)
    with pytest.raises(TokenDecryptionError, match=r"'gone'.*not in PLEXSYNC_TOKEN_KEYS"):
        TokenCipher.from_env_value(keys("k1")).decrypt(sealed, AAD)


def test_wrong_key_under_the_same_id_fails_authentication() -> None:
    sealed = TokenCipher.from_env_value(keys("k1")).encrypt("secret", AAD)
    with pytest.raises(TokenDecryptionError, match="not the one the token was encrypted with"):
        TokenCipher.from_env_value(keys("k1")).decrypt(sealed, AAD)


def test_associated_data_binds_ciphertext_to_its_row() -> None:
    cipher = TokenCipher.from_env_value(keys("k1"))
    sealed = cipher.encrypt("secret", token_aad("row-1"))
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(sealed, token_aad("row-2"))
    tampered = Sealed(sealed.key_id, sealed.nonce, sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1]))
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(tampered, token_aad("row-1"))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("", "not set"),
        ("nokey", "entry 1 must look like"),
        ("k1:" + base64.b64encode(os.urandom(16)).decode(), "16 bytes"),
        ("k1:!!!notbase64!!!", "not valid base64"),
        ("bad id:" + base64.b64encode(os.urandom(32)).decode(), "entry 1"),
    ],
)
def test_bad_key_configuration(raw: str, match: str) -> None:
    with pytest.raises(KeyConfigError, match=match):
        TokenCipher.from_env_value(raw)


def test_duplicate_key_ids_rejected_and_errors_never_echo_key_material() -> None:
    key = new_key()
    with pytest.raises(KeyConfigError) as info:
        TokenCipher.from_env_value(f"k1:{key},k1:{key}")
    assert key not in str(info.value)
    short = base64.b64encode(os.urandom(8)).decode()
    with pytest.raises(KeyConfigError) as info2:
        TokenCipher.from_env_value(f"k1:{short}")
    assert short not in str(info2.value)


def test_parse_keys_accepts_urlsafe_base64_and_whitespace() -> None:
    raw = base64.urlsafe_b64encode(os.urandom(32)).decode()
    parsed = parse_keys(f" a : {raw} , b:{new_key()}")
    assert [kid for kid, _ in parsed] == ["a", "b"]
    assert all(len(key) == 32 for _, key in parsed)
