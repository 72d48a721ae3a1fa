"""plex.tv side: PIN login, resources and user."""

from __future__ import annotations

import httpx
from plexsync.fakeplex import FakePlex, FakePlexControl

CID = {"X-Plex-Client-Identifier": "plexsync-test", "Accept": "application/json"}


async def test_pin_approve_flow(fp: FakePlex, ctl: FakePlexControl) -> None:
    async with httpx.AsyncClient(base_url=fp.plextv_url, headers=CID) as c:
        r = await c.post("/api/v2/pins", params={"strong": "true"})
        assert r.status_code == 201
        pin = r.json()
        assert len(pin["code"]) == 25 and pin["authToken"] is None and pin["clientIdentifier"] == "plexsync-test"
        assert pin["expiresIn"] > 0 and pin["expiresAt"].endswith("Z")
        assert (await c.get(f"/api/v2/pins/{pin['id']}")).json()["authToken"] is None
        await ctl.approve_pin(pin["id"])
        token = (await c.get(f"/api/v2/pins/{pin['id']}")).json()["authToken"]
        assert token == fp.account_token
        user = await c.get("/api/v2/user", headers={"X-Plex-Token": token})
        assert user.status_code == 200 and {"id", "uuid", "username", "email", "title", "thumb"} <= set(user.json())


async def test_pin_auto_approve_and_expiry(fp: FakePlex, ctl: FakePlexControl) -> None:
    await ctl.auto_approve_pins(3, ttl=1)
    async with httpx.AsyncClient(base_url=fp.plextv_url, headers=CID) as c:
        pin = (await c.post("/api/v2/pins?strong=true")).json()
        tokens = [(await c.get(f"/api/v2/pins/{pin['id']}")).json()["authToken"] for _ in range(3)]
        assert tokens[:2] == [None, None] and tokens[2] == fp.account_token
        other = (await c.post("/api/v2/pins")).json()
        assert len(other["code"]) == 4
        await ctl.expire_pin(other["id"])
        gone = await c.get(f"/api/v2/pins/{other['id']}")
        assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == 1020


async def test_pin_requires_client_identifier(fp: FakePlex) -> None:
    async with httpx.AsyncClient(base_url=fp.plextv_url) as c:
        assert (await c.post("/api/v2/pins")).status_code == 400


async def test_resources(fp: FakePlex) -> None:
    async with httpx.AsyncClient(base_url=fp.plextv_url, headers=CID) as c:
        assert (await c.get("/api/v2/resources?includeHttps=1&includeRelay=1")).status_code == 401
        r = await c.get("/api/v2/resources?includeHttps=1&includeRelay=1", headers={"X-Plex-Token": fp.token})
        devices = r.json()
        servers = [d for d in devices if "server" in d["provides"].split(",")]
        assert len(servers) == 1 and len(devices) == 2
        server = servers[0]
        assert server["clientIdentifier"] == fp.machine_identifier and server["accessToken"] == fp.token
        conns = server["connections"]
        kinds = {(c["local"], c["relay"]) for c in conns}
        assert kinds == {(True, False), (False, False), (False, True)}
        for conn in conns:
            assert set(conn) == {"protocol", "address", "port", "uri", "local", "relay", "IPv6"}
            ident = await c.get(f"{conn['uri']}/identity")
            assert ident.json()["MediaContainer"]["machineIdentifier"] == fp.machine_identifier
