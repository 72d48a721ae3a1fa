"""One sync with every service on mutual TLS: the CLI logs in, registers the server's libraries and syncs through
the scheduler's TriggerSync (scheduler -> scanner -> auth, catalog; all over mTLS); the items land in the catalog.
A CLI without the CA, or without its client certificate, gets a clear error instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plexsync.devstack.process import start_fakeplex

from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(300)
SERVICES = ("catalog", "auth", "scanner", "scheduler")
FAKEPLEX_ARGS = [
    *("--movies", "12", "--shows", "1", "--seasons", "1", "--episodes", "2", "--other-videos", "2", "--seed", "5"),
    *("--pin-auto-approve-after", "1", "--remote-host", "", "--relay-listen", ""),
]


@pytest.fixture(scope="module")
def fakeplex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    log = Path(tmp_path_factory.mktemp("fakeplex")) / "fakeplex.log"
    child, info = start_fakeplex(["--host", "127.0.0.1", "--port", "0", *FAKEPLEX_ARGS], log)
    try:
        yield info
    finally:
        child.stop(timeout=5)


@pytest.fixture(scope="module")
def stack(
    service_stack: ServiceStack, fakeplex: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> ServiceStack:
    from plexsync.auth.crypto import new_key

    service_stack.use_tls(Path(tmp_path_factory.mktemp("tls")), client_auth=True)
    service_stack.extra_env.update({"PLEXSYNC_PLEX_TV_URL": fakeplex["url"], "PLEXSYNC_TOKEN_KEYS": f"k1:{new_key()}"})
    for name in SERVICES:
        service_stack.reserve(name)
    for name in SERVICES[:-1]:
        service_stack.start(name)
    service_stack.start("scheduler", PLEXSYNC_SCHEDULER_TICK_SECONDS="3600")
    return service_stack


def cli(stack: ServiceStack, *args: str, tls: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")}
    env.update({f"PLEXSYNC_{name.upper()}_ADDR": address for name, address in stack.addresses.items()})
    env["PLEXSYNC_CLI_TOKEN"] = stack.tokens["cli"]
    env.update(stack.tls_env("cli") if tls is None else tls)
    return subprocess.run([sys.executable, "-m", "plexsync.cli", *args], env=env, text=True, capture_output=True,
                          timeout=180)  # fmt: skip


def cli_json(stack: ServiceStack, *args: str) -> Any:
    result = cli(stack, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_sync_over_mutual_tls_fills_the_catalog(stack: ServiceStack) -> None:
    for child in stack.children:
        log = child.log_file.read_text()
        assert f"{child.name} serves TLS" in log and "plain TCP" not in log, child.name
    login = cli_json(stack, "login", "--timeout", "30")
    [server] = login["servers"]
    libraries = cli_json(stack, "servers", "sync", server["id"])["libraries"]
    assert sorted(lib["kind"] for lib in libraries) == [
        "LIBRARY_KIND_MOVIES",
        "LIBRARY_KIND_OTHER_VIDEOS",
        "LIBRARY_KIND_SHOWS",
    ]

    jobs = cli_json(stack, "sync", "--server", server["id"], "--wait")
    assert {j["status"] for j in jobs} == {"JOB_STATUS_SUCCEEDED"} and len(jobs) == 3
    counts: dict[str, int] = {}
    for row in cli_json(stack, "stats")["counts"]:
        counts[row["kind"]] = counts.get(row["kind"], 0) + int(row["count"])
    assert counts == {"ITEM_KIND_MOVIE": 12, "ITEM_KIND_OTHER_VIDEO": 2, "ITEM_KIND_SHOW": 1, "ITEM_KIND_SEASON": 1,
                      "ITEM_KIND_EPISODE": 2}  # fmt: skip


def test_a_cli_without_the_ca_or_its_certificate_gets_a_clear_error(stack: ServiceStack) -> None:
    assert stack.ca is not None
    for tls in ({}, {"PLEXSYNC_TLS_CA_FILE": str(stack.ca.ca_file)}):
        result = cli(stack, "servers", "list", tls=tls)
        assert result.returncode == 1
        assert "no TLS connection to the auth service" in result.stderr, result.stderr
        assert "PLEXSYNC_TLS_CA_FILE" in result.stderr
