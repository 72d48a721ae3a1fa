"""The `plexsync` command against real services: every command group, --json output, and error cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plexsync.devstack.process import ChildProcess, start_fakeplex

from tests.support.stack import ServiceStack

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
    for name in ("catalog", "auth", "scanner"):
        service_stack.reserve(name)
    service_stack.start("catalog")
    service_stack.start("auth")
    service_stack.start("scanner")
    return service_stack


def run_cli(stack: ServiceStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")}
    base.update({f"PLEXSYNC_{name.upper()}_ADDR": address for name, address in stack.addresses.items()})
    base["PLEXSYNC_CLI_TOKEN"] = stack.tokens["cli"]
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "plexsync.cli", *args], env=base, text=True, capture_output=True,
                          timeout=120)  # fmt: skip


def cli_json(stack: ServiceStack, *args: str) -> Any:
    result = run_cli(stack, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


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

    scans = cli_json(stack, "sync", "--server", server_id, "--wait")
    assert len(scans) == 3
    assert {s["status"] for s in scans} == {"SCAN_STATUS_COMPLETED"}
    assert sum(int(s["counts"].get("added", 0)) for s in scans) == 30 + 4 + 2 + 4 + 12

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

    jobs = cli_json(stack, "jobs", "list")
    assert {j["id"] for j in scans} <= {j["id"] for j in jobs}
    assert cli_json(stack, "jobs", "show", scans[0]["id"])["status"] == "SCAN_STATUS_COMPLETED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["libraries", "set-interval", "x", "soon"], "invalid duration 'soon'"),
        (["paths", "set", "srv", "no-equals-sign"], "write PLEX_PATH=LOCAL_PATH"),
        (["items", "list", "--kind", "song"], "unknown kind 'song'"),
        (["items", "show", "not-a-uuid"], "item_id"),
        (["items", "list", "--limit", "5000"], "page_size"),
        (["jobs", "show", "00000000-0000-0000-0000-000000000000"], "NOT_FOUND"),
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
    refused = run_cli(stack, "stats", env={"PLEXSYNC_CLI_TOKEN": "wrong"})
    assert refused.returncode == 1
    assert "refused our credentials" in refused.stderr
