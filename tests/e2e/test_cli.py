"""The `plexsync` command against real services: every command group, --json output, and error cases.

The scheduler runs with a tick of an hour at first, so nothing is scanned on its own while the tests check
what manual syncs did; the scheduled-scan test restarts it with a one-second tick.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plexsync.devstack.process import ChildProcess, start_fakeplex
from plexsync.fakeplex.control import FakePlexControl

from tests.support.stack import ServiceStack

SERVICES = ("catalog", "auth", "scanner", "scheduler")
NO_SUCH_ID = "00000000-0000-0000-0000-000000000000"

FAKEPLEX_ARGS = [
    *("--movies", "30", "--shows", "2", "--seasons", "2", "--episodes", "3", "--other-videos", "4", "--seed", "11"),
    *("--pin-auto-approve-after", "1", "--remote-host", "", "--relay-listen", ""),
]


@pytest.fixture(scope="module")
def fakeplex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChildProcess, dict[str, Any]]]:
    log = Path(tmp_path_factory.mktemp("fakeplex")) / "fakeplex.log"
    child, info = start_fakeplex(["--host", "127.0.0.1", "--port", "0", *FAKEPLEX_ARGS], log)
    try:
        yield child, info
    finally:
        child.stop(timeout=5)


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, fakeplex: tuple[ChildProcess, dict[str, Any]]) -> ServiceStack:
    from plexsync.auth.crypto import new_key

    service_stack.extra_env.update(
        {"PLEXSYNC_PLEX_TV_URL": fakeplex[1]["url"], "PLEXSYNC_TOKEN_KEYS": f"k1:{new_key()}"}
    )
    for name in SERVICES:
        service_stack.reserve(name)
    for name in SERVICES[:-1]:
        service_stack.start(name)
    service_stack.start("scheduler", PLEXSYNC_SCHEDULER_TICK_SECONDS="3600")
    return service_stack


def cli_env(stack: ServiceStack, env: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")}
    base.update({f"PLEXSYNC_{name.upper()}_ADDR": address for name, address in stack.addresses.items()})
    base["PLEXSYNC_CLI_TOKEN"] = stack.tokens["cli"]
    base.update(env or {})
    return base


def run_cli(stack: ServiceStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "plexsync.cli", *args], env=cli_env(stack, env), text=True,
                          capture_output=True, timeout=120)  # fmt: skip


def cli_json(stack: ServiceStack, *args: str) -> Any:
    result = run_cli(stack, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout:.0f}s")


def hold_metadata(fakeplex: tuple[ChildProcess, dict[str, Any]], latency_ms: float) -> None:
    """Delay every full-metadata answer by ``latency_ms`` (0 clears the fault rules)."""

    async def apply() -> None:
        async with FakePlexControl(fakeplex[1]["url"]) as control:
            await control.clear_faults()
            if latency_ms:
                await control.add_fault("latency", path_prefix="/library/metadata/", latency_ms=latency_ms)

    asyncio.run(apply())


def library_ids(stack: ServiceStack) -> dict[str, str]:
    """Library id by kind label: movies, shows, other_videos."""
    return {
        lib["kind"].removeprefix("LIBRARY_KIND_").lower(): lib["id"] for lib in cli_json(stack, "libraries", "list")
    }


@pytest.fixture(scope="module")
def server_id(stack: ServiceStack) -> str:
    login = cli_json(stack, "login", "--timeout", "30")
    assert login["account"]["username"]
    assert len(login["servers"]) == 1
    return str(login["servers"][0]["id"])


def test_login_and_servers(stack: ServiceStack, server_id: str, fakeplex: tuple[ChildProcess, dict[str, Any]]) -> None:
    servers = cli_json(stack, "servers", "list")
    assert [s["id"] for s in servers] == [server_id]
    check = cli_json(stack, "servers", "check", server_id)
    assert check["chosen"]["uri"].startswith("http://127.0.0.1:")
    discovered = cli_json(stack, "servers", "discover")
    assert [s["id"] for s in discovered["servers"]] == [server_id]
    table = run_cli(stack, "servers", "list")
    assert table.returncode == 0 and server_id in table.stdout


def test_libraries_paths_sync_items_stats(stack: ServiceStack, server_id: str, tmp_path: Path) -> None:
    synced = cli_json(stack, "servers", "sync", server_id)
    kinds = sorted(lib["kind"] for lib in synced["libraries"])
    assert kinds == ["LIBRARY_KIND_MOVIES", "LIBRARY_KIND_OTHER_VIDEOS", "LIBRARY_KIND_SHOWS"]
    libraries = {lib["kind"]: lib for lib in cli_json(stack, "libraries", "list")}
    movies = libraries["LIBRARY_KIND_MOVIES"]

    rules = cli_json(stack, "paths", "set", server_id, f"/data={tmp_path}")
    assert rules == [{"plex_path": "/data", "local_path": str(tmp_path)}]
    assert cli_json(stack, "paths", "list", server_id) == rules

    updated = cli_json(stack, "libraries", "set-interval", movies["id"], "2h30m")
    assert updated["refresh_interval"] == "9000s"
    assert cli_json(stack, "libraries", "disable", movies["id"]).get("sync_enabled", False) is False
    assert cli_json(stack, "libraries", "enable", movies["id"])["sync_enabled"] is True
    shows = libraries["LIBRARY_KIND_SHOWS"]
    assert cli_json(stack, "libraries", "remote-streaming", shows["id"], "on")["remote_streaming_enabled"] is True

    jobs = cli_json(stack, "sync", "--server", server_id, "--wait")
    assert len(jobs) == 3
    assert {j["status"] for j in jobs} == {"JOB_STATUS_SUCCEEDED"}
    assert {j["library_id"] for j in jobs} == {lib["id"] for lib in libraries.values()}
    assert all(j["scan_id"] and j["trigger"] == "JOB_TRIGGER_MANUAL" and j["triggered_by"] == "cli" for j in jobs)
    assert sum(int(j["counts"].get("added", 0)) for j in jobs) == 30 + 4 + 2 + 4 + 12

    stats = cli_json(stack, "stats")
    by_kind: dict[str, int] = {}
    for row in stats["counts"]:
        by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + int(row["count"])
    assert by_kind == {"ITEM_KIND_MOVIE": 30, "ITEM_KIND_OTHER_VIDEO": 4, "ITEM_KIND_SHOW": 2,
                       "ITEM_KIND_SEASON": 4, "ITEM_KIND_EPISODE": 12}  # fmt: skip
    states = {row["state"] for row in stats["counts"] if row["kind"] == "ITEM_KIND_EPISODE"}
    assert states == {"ITEM_STATE_REMOTE_ONLY"}, "no local files and remote streaming on: remote-only"

    page = cli_json(stack, "items", "list", "--library", movies["id"], "--kind", "movie", "--limit", "10")
    assert len(page["items"]) == 10 and page["next_page_token"]
    rest = cli_json(stack, "items", "list", "--library", movies["id"], "--kind", "movie", "--limit", "100",
                    "--page-token", page["next_page_token"])  # fmt: skip
    assert len(rest["items"]) == 20
    assert not {i["id"] for i in page["items"]} & {i["id"] for i in rest["items"]}

    first = page["items"][0]
    found = cli_json(stack, "items", "search", first["title"])
    assert first["id"] in [r["item"]["id"] for r in found]
    item = cli_json(stack, "items", "show", first["id"])
    assert item["title"] == first["title"] and item["media"]
    shown = run_cli(stack, "items", "show", first["id"])
    assert shown.returncode == 0 and first["title"] in shown.stdout

    listed = cli_json(stack, "jobs", "list")
    assert {j["id"] for j in jobs} <= {j["id"] for j in listed}
    shown_job = cli_json(stack, "jobs", "show", jobs[0]["id"])
    assert shown_job["status"] == "JOB_STATUS_SUCCEEDED" and int(shown_job["stats"]["plex_requests"]) > 0
    assert shown_job["library_name"] and shown_job["trace_id"] and shown_job["attempt"] == 1
    text = run_cli(stack, "jobs", "show", jobs[0]["id"])
    assert text.returncode == 0, text.stderr
    for label in ("triggered by", "lag (due → start)", "duration", "plex requests", "time in catalog writes",
                  "trace id", shown_job["library_name"]):  # fmt: skip
        assert label in text.stdout, text.stdout
    movie_jobs = cli_json(stack, "jobs", "list", "--library", movies["id"], "--status", "succeeded")
    assert movie_jobs and {j["library_id"] for j in movie_jobs} == {movies["id"]}
    assert len(cli_json(stack, "jobs", "list", "--server", server_id, "--limit", "2")) == 2
    table = run_cli(stack, "jobs", "list")
    assert table.returncode == 0 and jobs[0]["id"] in table.stdout and "succeeded" in table.stdout

    scans = cli_json(stack, "scans", "list")
    assert {j["scan_id"] for j in jobs} <= {s["id"] for s in scans}
    scan = cli_json(stack, "scans", "show", jobs[0]["scan_id"])
    assert scan["status"] == "SCAN_STATUS_COMPLETED" and scan["job_id"] == jobs[0]["id"]
    assert run_cli(stack, "scans", "list", "--library", movies["id"]).returncode == 0
    assert run_cli(stack, "scans", "show", scan["id"]).returncode == 0


def test_cancel_stops_a_watched_job_and_a_second_sync_returns_it(
    stack: ServiceStack, server_id: str, fakeplex: tuple[ChildProcess, dict[str, Any]]
) -> None:
    movies = library_ids(stack)["movies"]
    # Metadata answers take 25 s (under the scanner's 30 s read timeout): the deep scan is certain to be running
    # when it is cancelled, however slow the machine, and cancelling it aborts the request it waits on.
    hold_metadata(fakeplex, 25_000)
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "plexsync.cli", "sync", "--library", movies, "--deep", "--wait", "--json"],
            env=cli_env(stack), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

        def running() -> Any:
            return cli_json(stack, "jobs", "list", "--library", movies, "--status", "running")

        job = wait_for("running job", running)[0]
        assert job["mode"] == "SCAN_MODE_DEEP" and job["trigger"] == "JOB_TRIGGER_MANUAL"
        again = run_cli(stack, "sync", "--library", movies)
        assert again.returncode == 0 and job["id"] in again.stdout and "already running" in again.stdout, again.stdout
        cancelled = cli_json(stack, "jobs", "cancel", job["id"])
        assert cancelled["id"] == job["id"]
        assert cancelled["status"] == "JOB_STATUS_CANCELLED" or cancelled["cancel_requested"]
        out, err = watcher.communicate(timeout=60)
        assert watcher.returncode == 1, err
        assert [(j["id"], j["status"]) for j in json.loads(out)] == [(job["id"], "JOB_STATUS_CANCELLED")]
    finally:
        hold_metadata(fakeplex, 0)
    assert cli_json(stack, "jobs", "show", job["id"])["status"] == "JOB_STATUS_CANCELLED"
    ended = run_cli(stack, "jobs", "cancel", job["id"])
    assert ended.returncode == 1 and "already ended" in ended.stderr
    listed = cli_json(stack, "jobs", "list", "--library", movies, "--status", "cancelled")
    assert job["id"] in [j["id"] for j in listed]


def test_schedule_set_show_list_round_trip(stack: ServiceStack, server_id: str) -> None:
    ids = library_ids(stack)
    movies = ids["movies"]
    window = {"start": "01:00", "end": "06:00", "time_zone": "Europe/Berlin"}
    changed = cli_json(stack, "schedule", "set", movies, "--interval", "6h", "--deep-every", "5",
                       "--deep-interval", "7d", "--window", "01:00-06:00", "--tz", "Europe/Berlin")  # fmt: skip
    assert changed["refresh_interval"] == "21600s" and changed["effective_refresh_interval"] == "21600s"
    assert changed["deep_every"] == 5 and changed["effective_deep_every"] == 5
    assert changed["deep_interval"] == "604800s" and changed["window"] == window
    assert changed["next_run_time"] and changed["next_mode"] in {"SCAN_MODE_INCREMENTAL", "SCAN_MODE_DEEP"}
    shown = cli_json(stack, "schedule", "show", movies)
    keys = ("refresh_interval", "deep_every", "deep_interval", "window", "enabled", "next_run_time", "next_mode")
    assert {k: shown.get(k) for k in keys} == {k: changed.get(k) for k in keys}
    text = run_cli(stack, "schedule", "show", movies)
    assert text.returncode == 0 and "01:00-06:00 Europe/Berlin" in text.stdout and "every 5th scan" in text.stdout

    # Only the paths given change: a new deep cadence keeps the window and the interval.
    kept = cli_json(stack, "schedule", "set", movies, "--deep-every", "3")
    assert kept["deep_every"] == 3 and kept["window"] == window and kept["refresh_interval"] == "21600s"

    # The catalog's interval is the schedule's: either command sets it.
    assert cli_json(stack, "libraries", "set-interval", movies, "2h30m")["refresh_interval"] == "9000s"
    assert cli_json(stack, "schedule", "show", movies)["refresh_interval"] == "9000s"

    schedules = cli_json(stack, "schedule", "list", "--server", server_id)
    assert {s["library_id"] for s in schedules} == set(ids.values())
    assert all(s.get("next_run_time") and s.get("next_reason") for s in schedules), schedules
    listed = run_cli(stack, "schedule", "list")
    assert listed.returncode == 0 and "Europe/Berlin" in listed.stdout

    off = cli_json(stack, "schedule", "set", movies, "--disable")
    assert not off.get("enabled") and "next_run_time" not in off
    assert not next(lib for lib in cli_json(stack, "libraries", "list") if lib["id"] == movies).get("sync_enabled")
    assert cli_json(stack, "schedule", "set", movies, "--enable")["enabled"] is True

    reset = cli_json(stack, "schedule", "set", movies, "--interval", "default", "--deep-every", "0",
                     "--deep-interval", "default", "--no-window")  # fmt: skip
    assert "window" not in reset and not reset.get("deep_every")
    assert reset.get("refresh_interval", "0s") == "0s" and reset.get("deep_interval", "0s") == "0s"
    status = cli_json(stack, "schedule", "status")
    assert reset["effective_refresh_interval"] == status["default_refresh_interval"]
    assert status["leader"] and status["max_running"] >= 1
    libraries = run_cli(stack, "libraries", "list")
    assert libraries.returncode == 0 and "default" in libraries.stdout
    shown_status = run_cli(stack, "schedule", "status")
    assert shown_status.returncode == 0 and status["leader"] in shown_status.stdout


def test_a_scheduled_scan_runs_on_its_own(stack: ServiceStack) -> None:
    scheduler = next(child for child in stack.children if child.name == "scheduler")
    scheduler.stop()
    stack.children.remove(scheduler)
    stack.start("scheduler", PLEXSYNC_SCHEDULER_TICK_SECONDS="1")
    other = library_ids(stack)["other_videos"]
    assert cli_json(stack, "schedule", "set", other, "--interval", "10s")["refresh_interval"] == "10s"
    try:

        def scheduled() -> Any:
            jobs = cli_json(stack, "jobs", "list", "--library", other, "--status", "succeeded")
            return next((j for j in jobs if j["trigger"] == "JOB_TRIGGER_SCHEDULED"), None)

        job = wait_for("scheduled job", scheduled, timeout=45)
    finally:
        cli_json(stack, "schedule", "set", other, "--interval", "default")
    assert job["triggered_by"] == "scheduler" and job["reason"]
    assert job["due_time"] and job["start_time"] and job["end_time"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["libraries", "set-interval", "x", "soon"], "invalid duration 'soon'"),
        (["paths", "set", "srv", "no-equals-sign"], "write PLEX_PATH=LOCAL_PATH"),
        (["items", "list", "--kind", "song"], "unknown kind 'song'"),
        (["items", "show", "not-a-uuid"], "item_id"),
        (["items", "list", "--limit", "-1"], "page_size"),
        (["jobs", "show", NO_SUCH_ID], "scheduler: NOT_FOUND"),
        (["jobs", "show", "not-a-uuid"], "job_id"),
        (["jobs", "cancel", NO_SUCH_ID], "`plexsync jobs list` shows job ids"),
        (["jobs", "list", "--status", "done"], "unknown status 'done'"),
        (["scans", "show", NO_SUCH_ID], "scanner: NOT_FOUND"),
        (["sync", "--library", NO_SUCH_ID], "NOT_FOUND"),
        (["schedule", "show", NO_SUCH_ID], "NOT_FOUND"),
        (["schedule", "set", "x", "--interval", "soon"], "invalid duration 'soon'"),
        (["schedule", "set", "x", "--deep-interval", "1w"], "invalid duration '1w'"),
        (["schedule", "set", "x", "--window", "25:00-01:00"], "invalid window '25:00-01:00'"),
        (["schedule", "set", "x", "--window", "1-6"], "invalid window '1-6'"),
        (
            ["schedule", "set", "x", "--window", "01:00-06:00", "--tz", "Mars/Olympus"],
            "unknown time zone 'Mars/Olympus'",
        ),
        (["schedule", "set", "x", "--tz", "UTC"], "--tz goes with --window"),
        (["schedule", "set", "x"], "nothing to change"),
        (["schedule", "set", NO_SUCH_ID, "--interval", "5s"], "schedule.refresh_interval"),
        (["servers", "add", "not a url", "--token", "x"], "url"),
        (["sync"], "--library ID, --server ID or --all"),
    ],
)
def test_bad_arguments_get_clear_errors(stack: ServiceStack, args: list[str], message: str) -> None:
    result = run_cli(stack, *args)
    assert result.returncode == 1
    assert message in result.stderr
    as_json = run_cli(stack, *args, "--json")
    assert as_json.returncode == 1
    assert message in json.loads(as_json.stdout)["error"]


def test_unreachable_service_and_bad_token(stack: ServiceStack) -> None:
    down = run_cli(stack, "stats", env={"PLEXSYNC_CATALOG_ADDR": "127.0.0.1:9"})
    assert down.returncode == 1
    assert "cannot reach the catalog service at 127.0.0.1:9" in down.stderr
    assert "make up" in down.stderr
    no_scheduler = run_cli(stack, "jobs", "list", env={"PLEXSYNC_SCHEDULER_ADDR": "127.0.0.1:9"})
    assert no_scheduler.returncode == 1
    assert "cannot reach the scheduler service at 127.0.0.1:9" in no_scheduler.stderr
    assert "PLEXSYNC_SCHEDULER_ADDR" in no_scheduler.stderr
    refused = run_cli(stack, "stats", env={"PLEXSYNC_CLI_TOKEN": "wrong"})
    assert refused.returncode == 1
    assert "refused our credentials" in refused.stderr
    refused_by_scheduler = run_cli(stack, "schedule", "status", env={"PLEXSYNC_CLI_TOKEN": "wrong"})
    assert refused_by_scheduler.returncode == 1
    assert "the scheduler service refused our credentials" in refused_by_scheduler.stderr
