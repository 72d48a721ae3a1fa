"""Pure logic of libs/common: page sizes and tokens, settings parsing, log redaction."""

from __future__ import annotations

import json
import logging

import pytest
from plexsync.common import pagination
from plexsync.common.access import Role
from plexsync.common.config import CommonSettings, MissingSettingError
from plexsync.common.errors import InvalidArgumentError
from plexsync.common.logs import JsonFormatter, redact


def test_page_size_defaults_clamps_and_rejects_negative() -> None:
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(7) == 7
    assert pagination.page_size(pagination.MAX_PAGE_SIZE + 1) == pagination.MAX_PAGE_SIZE
    assert pagination.page_size(2**31 - 1, default=25, maximum=200) == 200
    with pytest.raises(InvalidArgumentError) as info:
        pagination.page_size(-1)
    assert info.value.violations[0].field == "page_size"


def test_page_token_round_trip_and_rejects_other_filters() -> None:
    fingerprint = pagination.filters_fingerprint("lib-1", 2)
    token = pagination.encode_token(["2024-01-01", "abc"], fingerprint)
    assert pagination.decode_token(token, fingerprint) == ["2024-01-01", "abc"]
    assert pagination.decode_token("", fingerprint) is None
    with pytest.raises(InvalidArgumentError) as info:
        pagination.decode_token(token, pagination.filters_fingerprint("lib-2", 2))
    assert info.value.violations[0].field == "page_token"
    for garbage in ("%%%", "bm90LWpzb24", token[:-3]):
        with pytest.raises(InvalidArgumentError):
            pagination.decode_token(garbage, fingerprint)


def test_service_tokens_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "scanner:abc, cli:def")
    parsed = CommonSettings().accepted_tokens()
    assert [(t.identity, t.role) for t in parsed] == [("scanner", Role.SCANNER), ("cli", Role.ADMIN)]
    assert all(b"abc" not in t.digest and b"def" not in t.digest for t in parsed)  # only digests are kept
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "justatoken")
    with pytest.raises(ValueError, match="PLEXSYNC_SERVICE_TOKENS"):
        CommonSettings().accepted_tokens()


def test_require_names_every_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("NATS_URL", raising=False)
    with pytest.raises(MissingSettingError) as info:
        CommonSettings().require("DATABASE_URL", "NATS_URL")
    assert info.value.names == ["DATABASE_URL", "NATS_URL"]


def test_bad_log_level_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEXSYNC_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="PLEXSYNC_LOG_LEVEL"):
        CommonSettings()


@pytest.mark.parametrize(
    "text",
    [
        "GET /library?X-Plex-Token=abcdefSECRET123 failed",
        "headers: {'X-Plex-Token': 'abcdefSECRET123'}",
        "authorization: Bearer abcdefSECRET123",
        '{"authToken": "abcdefSECRET123"}',
    ],
)
def test_redact_removes_credentials(text: str) -> None:
    assert "abcdefSECRET123" not in redact(text)


def test_json_formatter_emits_one_object_with_extras() -> None:
    record = logging.makeLogRecord(
        {"msg": "scan %s done", "args": ("s1",), "levelname": "INFO", "name": "x", "items": 3}
    )
    entry = json.loads(JsonFormatter("scanner").format(record))
    assert entry["message"] == "scan s1 done"
    assert entry["service"] == "scanner"
    assert entry["items"] == 3
