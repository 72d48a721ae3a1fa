"""`make up` / `make down` semantics: healthy processes, no twins on a second `up`, nothing left after `down`."""

from __future__ import annotations

from pathlib import Path

import httpx
from plexsync.devstack import infra
from plexsync.devstack.process import wait_healthy
from plexsync.devstack.stack import SERVICES, Stack, service_exists


def test_up_is_idempotent_and_down_stops_everything(
    tmp_path: Path, database_url: str, nats_url: str, monkeypatch: object
) -> None:
    import os

    os.environ.setdefault("DATABASE_URL", database_url)
    os.environ.setdefault("NATS_URL", nats_url)
    stack = Stack(tmp_path / "stack")
    state = stack.up(fakeplex_args=["--movies", "20", "--shows", "2"])
    try:
        started = dict(state.pids)
        assert "fakeplex" in started
        expected = {name for name in SERVICES if service_exists(name)}
        assert expected <= set(started)
        for name in expected:
            wait_healthy(state.addresses[name], timeout=10)
        identity = httpx.get(f"{state.fakeplex_url}/identity", headers={"Accept": "application/json"}, timeout=5)
        assert identity.status_code == 200

        again = stack.up(fakeplex_args=["--movies", "20", "--shows", "2"])
        assert again.pids == started, "a second `up` must reuse what runs, not start twins"
    finally:
        stopped = stack.down()
    assert set(started) <= set(stopped)
    for pid in started.values():
        assert not infra.pid_alive(pid)


def test_embedded_postgres_gets_its_settings_once(tmp_path: Path) -> None:
    import psycopg

    data = tmp_path / "pg"
    url, pid = infra.start_postgres(data)
    try:
        with psycopg.connect(url) as conn:
            for name, value in infra.POSTGRES_SETTINGS.items():
                row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
                assert row is not None and row[0] == value, name
        # Already applied: a second start reuses the running server (no restart).
        assert infra.start_postgres(data) == (url, pid)
    finally:
        infra.stop_postgres(data)
    assert not infra.pid_alive(pid)
