"""The diagnostics (`servers check`, `token check`, `paths test`, `doctor`) against fakeplex and real services.

fakeplex serves two connections: ``local`` (plain HTTP, wins while up) and ``https`` (a ``*.plex.direct``-style
certificate from its own CA, which auth is told to trust). The tests run in order: the token is revoked last.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pytest
from plexsync.auth.diagnostics import TlsStatus, check_tls
from plexsync.devstack.infra import free_port
from plexsync.devstack.process import ChildProcess, start_fakeplex
from plexsync.fakeplex.control import FakePlexControl

from tests.e2e.test_cli import cli_env, run_cli
from tests.support.stack import ServiceStack

SERVICES = ("catalog", "auth", "scanner", "scheduler")
FAKEPLEX_ARGS = [
    *("--host", "127.0.0.1", "--port", "0", "--control-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"),
    *("--remote-host", "", "--relay-listen", "", "--pin-auto-approve-after", "1"),
    *("--movies", "6", "--shows", "1", "--seasons", "1", "--episodes", "4", "--other-videos", "0", "--seed", "23"),
]


@pytest.fixture(scope="module")
def fakeplex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    log = Path(tmp_path_factory.mktemp("fakeplex")) / "fakeplex.log"
    child: ChildProcess
    child, info = start_fakeplex(FAKEPLEX_ARGS, log)
    try:
        yield info
    finally:
        child.stop(timeout=5)


def control(fakeplex: dict[str, Any]) -> FakePlexControl:
    """Through the control listener, which is none of the server's connections."""
    return FakePlexControl(str(fakeplex["control_url"]))


async def clear_requests(fakeplex: dict[str, Any]) -> None:
    async with control(fakeplex) as ctl:
        await ctl.clear_requests()


async def requests_to(fakeplex: dict[str, Any], path_prefix: str) -> list[dict[str, Any]]:
    async with control(fakeplex) as ctl:
        return await ctl.requests(path_prefix=path_prefix)


def listeners(fakeplex: dict[str, Any]) -> dict[str, str]:
    return {name: entry["uri"] for name, entry in fakeplex["listeners"].items()}


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, fakeplex: dict[str, Any]) -> ServiceStack:
    from plexsync.auth.crypto import new_key

    service_stack.extra_env.update(
        {
            "PLEXSYNC_PLEX_TV_URL": str(fakeplex["control_url"]),
            "PLEXSYNC_PLEX_CA_BUNDLE": str(fakeplex["tls_ca_file"]),
            "PLEXSYNC_TOKEN_KEYS": f"k1:{new_key()}",
            "PLEXSYNC_PROBE_TIMEOUT_SECONDS": "3",
        }
    )
    for name in SERVICES:
        service_stack.reserve(name)
    for name in SERVICES[:-1]:
        service_stack.start(name)
    service_stack.start("scheduler", PLEXSYNC_SCHEDULER_TICK_SECONDS="3600")
    return service_stack


def run(stack: ServiceStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(stack, *args, env=env)


def run_json(stack: ServiceStack, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    result = run(stack, *args, "--json", env=env)
    assert result.returncode == code, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def server_id(stack: ServiceStack) -> str:
    login = run_json(stack, "login", "--timeout", "30")
    assert len(login["servers"]) == 1
    return str(login["servers"][0]["id"])


@pytest.fixture(scope="module")
def libraries(stack: ServiceStack, server_id: str) -> dict[str, dict[str, Any]]:
    synced = run_json(stack, "servers", "sync", server_id)
    return {lib["kind"].removeprefix("LIBRARY_KIND_").lower(): lib for lib in synced["libraries"]}


def test_servers_check_every_connection(stack: ServiceStack, server_id: str, fakeplex: dict[str, Any]) -> None:
    urls = listeners(fakeplex)
    [check] = run_json(stack, "servers", "check")  # no server: every server, as a list
    probes = {p["uri"]: p for p in check["probes"]}
    assert set(probes) == {urls["local"], urls["https"]}
    assert all(p["reachable"] for p in probes.values())
    assert all(p["latency"].endswith("s") for p in probes.values())
    assert check["chosen"]["uri"] == urls["local"], "a local connection beats a remote one"
    tls = {t["uri"]: t for t in check["tls"]}
    assert tls[urls["https"]]["status"] == "TLS_STATUS_VERIFIED"
    assert tls[urls["local"]]["status"] == "TLS_STATUS_NOT_USED"
    assert check["problems"] == []
    table = run(stack, "servers", "check", server_id)
    assert table.returncode == 0, table.stderr
    assert "wins" in table.stdout and "verified" in table.stdout


def test_servers_check_unreachable_connection(
    stack: ServiceStack, server_id: str, fakeplex: dict[str, Any], libraries: dict[str, dict[str, Any]]
) -> None:
    urls = listeners(fakeplex)

    async def set_local(state: Literal["up", "down"]) -> None:
        async with control(fakeplex) as ctl:
            await ctl.set_connection("local", state)

    asyncio.run(set_local("down"))
    try:
        check = run_json(stack, "servers", "check", server_id)  # warnings only: exit 0
        probes = {p["uri"]: p for p in check["probes"]}
        assert probes[urls["local"]].get("reachable", False) is False
        assert "connection refused" in probes[urls["local"]]["last_error"]
        assert check["chosen"]["uri"] == urls["https"], "the other connection wins"
        assert [p["level"] for p in check["problems"]] == ["warn"]
        assert urls["local"] in check["problems"][0]["message"]
        table = run(stack, "servers", "check", server_id)
        row = next(line for line in table.stdout.splitlines() if urls["https"] in line)
        assert "wins" in row
        # The scanner trusts what auth trusts (PLEXSYNC_PLEX_CA_BUNDLE): a sync over the https connection works.
        asyncio.run(clear_requests(fakeplex))
        [job] = run_json(stack, "sync", "--library", libraries["movies"]["id"], "--deep", "--wait")
        assert job["status"] == "JOB_STATUS_SUCCEEDED", job
        listeners_used = {r["listener"] for r in asyncio.run(requests_to(fakeplex, "/library/"))}
        assert listeners_used == {"https"}, listeners_used
    finally:
        asyncio.run(set_local("up"))
    assert run_json(stack, "servers", "check", server_id)["chosen"]["uri"] == urls["local"]


def test_tls_verdicts_of_fakeplex_connections(fakeplex: dict[str, Any]) -> None:
    """The handshake check itself: verified with fakeplex's CA, the verification error without it."""
    urls = listeners(fakeplex)
    trusting = ssl.create_default_context(cafile=str(fakeplex["tls_ca_file"]))

    async def checks() -> list[Any]:
        return list(
            await asyncio.gather(
                check_tls(urls["https"], trusting, 5),
                check_tls(urls["https"], ssl.create_default_context(), 5),
                check_tls(urls["local"], trusting, 5),
                check_tls(f"https://127.0.0.1:{free_port()}", trusting, 5),
                check_tls(urls["https"], None, 5),
                check_tls(urls["https"].replace("127.0.0.1", "localhost"), trusting, 5),
            )
        )

    verified, untrusted, plain, closed, unverified, misnamed = asyncio.run(checks())
    assert verified.status is TlsStatus.VERIFIED and verified.error == ""
    assert untrusted.status is TlsStatus.INVALID
    assert untrusted.error == "certificate verify failed: self-signed certificate in certificate chain"
    assert misnamed.status is TlsStatus.INVALID and "Hostname mismatch" in misnamed.error
    assert plain.status is TlsStatus.NOT_USED
    assert closed.status is TlsStatus.UNREACHABLE and closed.error
    assert unverified.status is TlsStatus.NOT_VERIFIED


def _top_dir(path: str) -> str:
    return "/" + path.strip("/").split("/", 1)[0]


def test_paths_test_broken_and_good_rules(
    stack: ServiceStack, server_id: str, libraries: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    movies = libraries["movies"]["id"]
    unmapped = run_json(stack, "paths", "test", movies, "--sample", "3", code=1)
    assert unmapped["total_items"] == 6
    files = unmapped["files"]
    assert len({f["rating_key"] for f in files}) == 3, "three different items (an item may have several files)"
    assert all(f["local_path"] == f["plex_path"] and "rule" not in f for f in files)
    assert all(f["state"] == "ITEM_STATE_UNAVAILABLE" for f in files)
    prefix = _top_dir(files[0]["plex_path"])
    assert all(f["plex_path"].startswith(prefix + "/") for f in files)

    # A rule to a folder that does not exist: every file unavailable, the rule shown.
    broken = tmp_path / "not-mounted"
    run_json(stack, "paths", "set", server_id, f"{prefix}={broken}")
    result = run_json(stack, "paths", "test", movies, "--sample", "3", code=1)
    for f in result["files"]:
        assert f["local_path"] == str(broken) + f["plex_path"][len(prefix) :]
        assert f.get("exists", False) is False
        assert f["state"] == "ITEM_STATE_UNAVAILABLE" and f["item_state"] == "ITEM_STATE_UNAVAILABLE"
        assert f["rule"] == {"plex_path": prefix, "local_path": str(broken)}
    [problem] = result["problems"]
    n = len(files)
    assert problem["level"] == "fail" and f"{n} of {n}" in problem["message"] and str(broken) in problem["message"]
    table = run(stack, "paths", "test", movies, "--sample", "3")
    assert table.returncode == 1
    assert f"{prefix} ->" in table.stdout and "not-mounted" in table.stdout and "unavailable" in table.stdout

    # With remote streaming the same files are REMOTE_ONLY: a warning, exit 0.
    run_json(stack, "libraries", "remote-streaming", movies, "on")
    try:
        streaming = run_json(stack, "paths", "test", movies, "--sample", "3")
        assert {f["state"] for f in streaming["files"]} == {"ITEM_STATE_REMOTE_ONLY"}
        assert [p["level"] for p in streaming["problems"]] == ["warn"]
    finally:
        run_json(stack, "libraries", "remote-streaming", movies, "off")

    # A rule to where the files are: NORMAL where the file exists, UNAVAILABLE where it does not.
    good = tmp_path / "media"
    run_json(stack, "paths", "set", server_id, f"{prefix}={good}")
    present = files[0]["rating_key"]
    for f in files:
        if f["rating_key"] == present:
            local = Path(str(good) + f["plex_path"][len(prefix) :])
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(b"")
    mapped = run_json(stack, "paths", "test", movies, "--sample", "3", code=1)["files"]
    assert [f["plex_path"] for f in mapped] == [f["plex_path"] for f in files], "the same sample"
    for f in mapped:
        here = f["rating_key"] == present
        assert f.get("exists", False) is here
        assert f["state"] == f["item_state"] == ("ITEM_STATE_NORMAL" if here else "ITEM_STATE_UNAVAILABLE")

    shows = run_json(stack, "paths", "test", libraries["shows"]["id"], "--sample", "2", code=1)
    assert shows["total_items"] == 4, "episodes are what has files"
    assert len({f["rating_key"] for f in shows["files"]}) == 2

    bad = run(stack, "paths", "test", movies, "--sample", "101")
    assert bad.returncode == 1 and "sample_size" in bad.stderr


def test_token_check_accepted(stack: ServiceStack, server_id: str) -> None:
    report = run_json(stack, "token", "check")
    [account] = report["accounts"]
    assert account["plex_tv"] == "TOKEN_VERDICT_ACCEPTED"
    [server] = report["servers"]
    assert server["server_id"] == server_id
    assert server["plex_tv"] == "TOKEN_VERDICT_ACCEPTED" and server["server"] == "TOKEN_VERDICT_ACCEPTED"
    assert report["problems"] == []
    assert run_json(stack, "token", "check", "--server", server_id)["servers"][0]["server_id"] == server_id


def test_doctor_healthy_then_broken(
    stack: ServiceStack, server_id: str, libraries: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for library in libraries.values():  # files that are not here stream from Plex: warnings, not failures
        run_json(stack, "libraries", "remote-streaming", library["id"], "on")
    report = run_json(stack, "doctor", "--sample", "2")
    assert report["ok"] is True, report["problems"]
    assert {p["level"] for p in report["problems"]} <= {"warn"}
    version = metadata.version("plexsync")
    assert {s["name"]: (s["readiness"], s["liveness"], s["version"]) for s in report["services"]} == {
        name: ("serving", "serving", version) for name in SERVICES
    }
    assert [s["server"]["id"] for s in report["servers"]] == [server_id]
    assert report["tokens"]["servers"][0]["server"] == "TOKEN_VERDICT_ACCEPTED"
    assert {p["library"]["id"] for p in report["paths"]} == {lib["id"] for lib in libraries.values()}
    table = run(stack, "doctor", "--sample", "2")
    assert table.returncode == 0 and "doctor:" in table.stdout

    # A service that does not answer is a failure.
    env = cli_env(stack) | {"PLEXSYNC_SCHEDULER_ADDR": f"127.0.0.1:{free_port()}"}
    down = run_json(stack, "doctor", "--sample", "1", code=1, env=env)
    assert down["ok"] is False
    assert any(p["level"] == "fail" and p["message"].startswith("scheduler at ") for p in down["problems"])


def test_revoked_token(stack: ServiceStack, server_id: str, fakeplex: dict[str, Any]) -> None:
    """Last: plex.tv and the server stop accepting the token."""

    async def revoke() -> None:
        async with control(fakeplex) as ctl:
            await ctl.revoke_token(str(fakeplex["token"]))

    asyncio.run(revoke())
    report = run_json(stack, "token", "check", code=1)
    assert report["accounts"][0]["plex_tv"] == "TOKEN_VERDICT_REJECTED"
    [server] = report["servers"]
    assert server["plex_tv"] == "TOKEN_VERDICT_REJECTED" and server["server"] == "TOKEN_VERDICT_REJECTED"
    assert {p["level"] for p in report["problems"]} == {"fail", "warn"}
    table = run(stack, "token", "check")
    assert table.returncode == 1 and table.stdout.count("rejected") >= 3
    doctor = run_json(stack, "doctor", "--sample", "1", code=1)
    assert any(p["check"] == "tokens" and p["level"] == "fail" for p in doctor["problems"])
