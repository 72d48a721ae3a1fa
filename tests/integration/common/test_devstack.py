"""`make up` / `make down` semantics: healthy processes, no twins on a second `up`, nothing left after `down`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from plexsync.devstack import infra
from plexsync.devstack.process import wait_healthy
from plexsync.devstack.stack import SERVICES, Stack, StackState, login_hint, service_exists


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


# ---- the dev stack as a newcomer meets it: login, a dead fakeplex or NATS, Plex down vs the scanner down --------


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Stack]:
    """A dev stack of its own NATS (so a test can kill it), fakeplex and every service, on the module's database."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", database_url)
        patch.delenv("NATS_URL", raising=False)
        stack = Stack(tmp_path_factory.mktemp("devstack") / "stack")
        try:
            stack.up()
            yield stack
        finally:
            stack.down()


def _state(stack: Stack) -> StackState:
    state = stack.load()
    assert state is not None
    return state


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")}
    env.update(_state(stack).service_env("cli"))
    return subprocess.run([sys.executable, "-m", "plexsync.cli", *args], env=env, text=True, capture_output=True,
                          timeout=180)  # fmt: skip


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while infra.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not infra.pid_alive(pid)


def test_login_is_approved_by_fakeplex_and_its_link_opens_fakeplex(dev: Stack) -> None:
    url = _state(dev).fakeplex_url
    login = _cli(dev, "login", "--timeout", "90")
    assert login.returncode == 0, login.stderr
    assert f"Open {url}/__fakeplex/auth#?" in login.stderr, "the link must lead to fakeplex, not app.plex.tv"
    assert "app.plex.tv" not in login.stderr
    assert "Logged in as" in login.stdout
    assert url in login_hint(url) and "approves the PIN by itself" in login_hint(url)

    page = httpx.get(f"{url}/__fakeplex/auth", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "pins/by-code/" in page.text
    client = {"X-Plex-Client-Identifier": "test-devstack", "Accept": "application/json"}
    pin = httpx.post(f"{url}/api/v2/pins", headers=client, timeout=10).json()
    approved = httpx.post(f"{url}/__fakeplex/pins/by-code/{pin['code']}/approve", timeout=10)
    assert approved.status_code == 200
    assert httpx.get(f"{url}/api/v2/pins/{pin['id']}", headers=client, timeout=10).json()["authToken"]
    assert httpx.post(f"{url}/__fakeplex/pins/by-code/NOPE/approve", timeout=10).status_code == 404


def test_cli_tells_plex_down_from_the_scanner_down(dev: Stack) -> None:
    servers = _cli(dev, "servers", "list", "--json")
    assert servers.returncode == 0, servers.stderr
    server_id = json.loads(servers.stdout)[0]["id"]
    synced = _cli(dev, "servers", "sync", server_id)
    assert synced.returncode == 0, synced.stderr

    _kill(_state(dev).pids["fakeplex"])
    plex_down = _cli(dev, "servers", "sync", server_id, "--json")
    assert plex_down.returncode == 1
    error = json.loads(plex_down.stdout)
    assert error["component"] == "plex", error
    assert "cannot reach the scanner" not in error["error"]
    assert "the scanner service is running but cannot reach Plex" in error["error"]
    assert "FakePlex" in error["error"], "the message names the Plex server"
    assert "plexsync servers check" in error["error"]

    scanner = _state(dev)
    infra.terminate(scanner.pids["scanner"])
    scanner_down = _cli(dev, "servers", "sync", server_id, "--json")
    assert scanner_down.returncode == 1
    error = json.loads(scanner_down.stdout)
    assert error["component"] == "scanner"
    assert f"cannot reach the scanner service at {scanner.addresses['scanner']}" in error["error"]
    assert "make up" in error["error"]


def test_up_keeps_addresses_and_rewires_services_after_nats_died(dev: Stack) -> None:
    before = _state(dev)
    _kill(before.nats_pid)
    running = {name: pid for name, pid in before.pids.items() if name in SERVICES and infra.pid_alive(pid)}
    assert running, "the previous test leaves some services running"

    after = dev.up()
    assert after.fakeplex_url == before.fakeplex_url, "fakeplex comes back on its port: stored connections stay true"
    assert after.addresses == before.addresses, "services keep their addresses: exported env stays true"
    assert after.nats_pid != before.nats_pid and infra.pid_alive(after.nats_pid)
    for name, pid in running.items():
        assert after.pids[name] != pid, f"{name} still runs on the dead NATS"
        assert any(note.startswith(f"restarted {name}: NATS") for note in dev.notes), dev.notes
    for name in SERVICES:
        if service_exists(name):
            assert psutil.Process(after.pids[name]).environ()["NATS_URL"] == after.nats_url
            wait_healthy(after.addresses[name], timeout=30)
    servers = json.loads(_cli(dev, "servers", "list", "--json").stdout)
    synced = _cli(dev, "servers", "sync", servers[0]["id"])
    assert synced.returncode == 0, "the stored server answers at its old address again: " + synced.stderr

    again = dev.up()
    assert again.pids == after.pids and dev.notes == [], "nothing changed: nothing restarted"
