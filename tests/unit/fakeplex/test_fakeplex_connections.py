"""The control listener, the HTTPS connection, hiding the server from plex.tv, and the request log."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from plexsync.fakeplex import FakePlex, FakePlexControl, LibrarySpec

SPEC = LibrarySpec.from_sizes(movies=5, shows=1, seasons=1, episodes=2, other_videos=0, seed=3)
CID = {"X-Plex-Client-Identifier": "plexsync-test", "Accept": "application/json"}
RESOURCES = "/api/v2/resources?includeHttps=1&includeRelay=1"


@pytest.fixture
async def full() -> AsyncIterator[FakePlex]:
    async with FakePlex(spec=SPEC, control_listen="127.0.0.1:0", tls_listen="127.0.0.1:0", request_log_size=5) as fp:
        yield fp


def _server(devices: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((d for d in devices if "server" in str(d["provides"]).split(",")), None)


async def test_control_listener_is_not_a_connection(full: FakePlex) -> None:
    info = full.info()
    assert info["control_url"] == full.control_url == full.plextv_url != full.url
    uris = {c["uri"] for c in info["connections"]}
    assert full.control_url not in uris and "control" not in info["listeners"]
    async with FakePlexControl(full.control_url) as ctl:
        for name in ("local", "remote", "relay", "https"):
            await ctl.set_connection(name, "down")
        async with httpx.AsyncClient(headers=CID | {"X-Plex-Token": full.token}, verify=False, timeout=5) as c:
            for uri in uris:
                with pytest.raises(httpx.TransportError):
                    await c.get(f"{uri}/identity")
            r = await c.get(f"{full.plextv_url}{RESOURCES}")
            assert r.status_code == 200, "plex.tv still answers on the control listener"
        assert (await ctl.info())["listeners"]["local"]["state"] == "down"
        with pytest.raises(Exception, match="404"):
            await ctl.set_connection("control", "down")
        await ctl.reset()
    async with httpx.AsyncClient(timeout=5) as c:
        assert (await c.get(f"{full.url}/identity")).status_code == 200


async def test_https_connection_with_plex_direct_certificate(full: FakePlex) -> None:
    assert full.tls is not None
    https = full.listeners["https"]
    assert https.uri.startswith("https://127.0.0.1:")
    async with httpx.AsyncClient(headers=CID | {"X-Plex-Token": full.token}, timeout=5) as c:
        devices = (await c.get(f"{full.plextv_url}{RESOURCES}")).json()
        server = _server(devices)
        assert server is not None
        conns = server["connections"]
        assert isinstance(conns, list)
        [listed] = [x for x in conns if x["protocol"] == "https"]
        assert listed["uri"] == https.uri and listed["local"] is False and listed["relay"] is False
        plain = (await c.get(f"{full.plextv_url}/api/v2/resources")).json()
        plain_server = _server(plain)
        assert plain_server is not None
        assert {x["protocol"] for x in plain_server["connections"]} == {"http"}, "https only with includeHttps=1"
        assert not any(x["relay"] for x in plain_server["connections"]), "relay only with includeRelay=1"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get(f"{https.uri}/identity")
    trusting = ssl.create_default_context(cafile=str(full.tls.ca_file))
    async with httpx.AsyncClient(verify=trusting, timeout=5) as c:
        ident = (await c.get(f"{https.uri}/identity", headers={"Accept": "application/json"})).json()
        assert ident["MediaContainer"]["machineIdentifier"] == full.machine_identifier
    pem = full.tls.cert_file.read_bytes()
    leaf = x509.load_pem_x509_certificate(pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [f"*.{full.plex_direct_hash}.plex.direct"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert full.info()["tls_ca_file"] == str(full.tls.ca_file)


async def test_hiding_the_server_from_plex_tv(full: FakePlex) -> None:
    async with (
        FakePlexControl(full.control_url) as ctl,
        httpx.AsyncClient(base_url=full.plextv_url, headers=CID | {"X-Plex-Token": full.token}) as c,
    ):
        await ctl.set_listed(False)
        assert _server((await c.get(RESOURCES)).json()) is None
        assert (await ctl.info())["listed"] is False
        assert (await c.get(f"{full.url}/identity")).status_code == 200, "the server itself still answers"
        await ctl.set_listed(True)
        assert _server((await c.get(RESOURCES)).json()) is not None
        await ctl.set_listed(False)
        await ctl.reset()
        assert _server((await c.get(RESOURCES)).json()) is not None, "reset lists it again"


async def test_request_log_keeps_headers_but_never_tokens(full: FakePlex) -> None:
    async with FakePlexControl(full.control_url) as ctl, httpx.AsyncClient(timeout=5) as c:
        await c.get(f"{full.url}/library/metadata/1", headers={"X-Plex-Token": full.token, "X-Plex-Product": "t"})
        await c.get(f"{full.url}/library/sections?X-Plex-Token={full.token}&a=b")
        await c.get(f"{full.plextv_url}/api/v2/user", headers={"Authorization": "Bearer x", "Cookie": "c=1"})
        await ctl.info()  # control calls are not recorded
        entries = await ctl.requests()
        assert [(e["listener"], e["method"], e["template"]) for e in entries] == [
            ("local", "GET", "/library/metadata/{ids}"),
            ("local", "GET", "/library/sections"),
            ("control", "GET", "/api/v2/user"),
        ]
        first, second, third = entries
        assert first["headers"]["X-Plex-Product"] == "t" and first["token_in_header"] and not first["token_in_query"]
        assert second["token_in_query"] and second["query"] == {"X-Plex-Token": "<redacted>", "a": "b"}
        assert second["path"] == "/library/sections"
        lowered = {k.lower() for k in third["headers"]}
        assert not lowered & {"x-plex-token", "authorization", "cookie"}
        raw = json.dumps(entries)
        assert full.token not in raw and "Bearer" not in raw
        assert [e["template"] for e in await ctl.requests(1)] == ["/api/v2/user"]
        assert [e["path"] for e in await ctl.requests(path_prefix="/api/")] == ["/api/v2/user"]
        for _ in range(10):
            await c.get(f"{full.url}/identity")
        assert len(await ctl.requests()) == 5, "bounded"
        await ctl.clear_requests()
        assert await ctl.requests() == []


def test_cli_control_and_tls_flags(tmp_path: Path) -> None:
    ready, ca = tmp_path / "ready.json", tmp_path / "certs" / "ca.pem"
    args = ["--port", "0", "--movies", "1", "--shows", "0", "--other-videos", "0", "--ready-file", str(ready)]
    args += ["--control-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--tls-ca-file", str(ca)]
    proc = subprocess.Popen([sys.executable, "-m", "plexsync.fakeplex", *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "fakeplex did not become ready"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["tls_ca_file"] == str(ca) and ca.exists()
        assert info["control_url"] not in {c["uri"] for c in info["connections"]}
        https = info["listeners"]["https"]["uri"]
        r = httpx.get(f"{https}/identity", verify=ssl.create_default_context(cafile=str(ca)))
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
