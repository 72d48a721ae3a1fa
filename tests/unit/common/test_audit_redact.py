"""What the audit log keeps of before/after values: nothing that looks like a secret."""

from __future__ import annotations

from datetime import UTC, datetime

from plexsync.common.audit import REDACTED, audit_subject, redact


def test_values_under_secret_looking_names_are_redacted_at_any_depth() -> None:
    value = {
        "name": "Kept",
        "token": "abc",
        "X-Plex-Token": "abc",
        "nested": {"accessToken": "abc", "password": "p", "api_key": "k", "ok": 1},
        "servers": [{"authToken": "abc", "id": "s1"}],
        "service_credentials": {"anything": "x"},
    }
    assert redact(value) == {
        "name": "Kept",
        "token": REDACTED,
        "X-Plex-Token": REDACTED,
        "nested": {"accessToken": REDACTED, "password": REDACTED, "api_key": REDACTED, "ok": 1},
        "servers": [{"authToken": REDACTED, "id": "s1"}],
        "service_credentials": REDACTED,
    }


def test_tokens_inside_text_are_redacted_and_other_values_become_json() -> None:
    text = "http://h:32400/library?X-Plex-Token=s3cr3t&x=1 and Bearer s3cr3t2"
    assert redact(text) == f"http://h:32400/library?X-Plex-Token={REDACTED}&x=1 and Bearer {REDACTED}"
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    assert redact({"at": moment, "ids": ("a", "b"), "n": None, "flag": True}) == {
        "at": "2026-12-07T00:00:00+00:00",
        "ids": ["a", "b"],
        "n": None,
        "flag": True,
    }


def test_subjects_name_the_service_and_the_action() -> None:
    assert audit_subject("auth", "server.add") == "plexsync.v1.audit.auth.server.add"
