"""Control API: mutations bump updatedAt like Plex and are announced on the websocket."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl, FakePlexControlError

JSON = {"Accept": "application/json"}


async def _meta(client: httpx.AsyncClient, rk: int | str) -> dict[str, Any]:
    r = await client.get(f"/library/metadata/{rk}", headers=JSON)
    r.raise_for_status()
    return dict(r.json()["MediaContainer"]["Metadata"][0])


def _episode(fp: FakePlex) -> tuple[int, int, int]:
    show = fp.library.list_keys(2)[0]
    season = fp.library.nodes[show].children[0]
    return show, season, fp.library.nodes[season].children[0]


async def test_change_bumps_item_and_parents(fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    show, season, ep = _episode(fp)
    before = {rk: (await _meta(client, rk))["updatedAt"] for rk in (show, season, ep)}
    await ctl.change(ep, title="Ünïcødé 🎉 title", summary=None)
    after = await _meta(client, ep)
    assert after["title"] == "Ünïcødé 🎉 title" and "summary" not in after
    assert after["updatedAt"] > before[ep]
    assert (await _meta(client, season))["updatedAt"] > before[season]
    assert (await _meta(client, show))["updatedAt"] > before[show]
    again = await ctl.change(ep, Genre=[{"id": 1, "tag": "Drama"}])
    assert again["updatedAt"] > after["updatedAt"]


async def test_add_delete_movie(fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    rk = await ctl.add_item(1, title="Zzz New Movie", year=2024)
    listing = (await client.get("/library/sections/1/all", headers=JSON)).json()["MediaContainer"]
    assert listing["totalSize"] == 41
    added = [m for m in listing["Metadata"] if m["ratingKey"] == rk]
    assert len(added) == 1 and added[0]["title"] == "Zzz New Movie" and added[0]["year"] == 2024
    await ctl.delete(rk)
    assert (await client.get(f"/library/metadata/{rk}")).status_code == 404
    assert (await client.get("/library/sections/1/all?X-Plex-Container-Size=0", headers=JSON)).json()["MediaContainer"][
        "totalSize"
    ] == 40


async def test_add_episode_and_move(fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    show, season, ep = _episode(fp)
    new = await ctl.add_item(2, parent=season, title="Bonus")
    meta = await _meta(client, new)
    assert meta["type"] == "episode" and meta["parentRatingKey"] == str(season) and meta["index"] == 4
    other_season = fp.library.nodes[show].children[1]
    moved = await ctl.move(ep, other_season, index=9)
    assert moved["parentRatingKey"] == str(other_season) and moved["index"] == 9 and moved["parentIndex"] == 2
    kids = (await client.get(f"/library/metadata/{other_season}/children", headers=JSON)).json()["MediaContainer"]
    assert str(ep) in [m["ratingKey"] for m in kids["Metadata"]]
    with pytest.raises(FakePlexControlError):
        await ctl.move(ep, show)


async def test_media_and_file_replacement(fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    before = await _meta(client, 1)
    with_media = await ctl.add_media(1, file="/data/movies/extra.mkv")
    assert len(with_media["Media"]) == len(before["Media"]) + 1
    assert with_media["Media"][-1]["Part"][0]["file"] == "/data/movies/extra.mkv"
    replaced = await ctl.replace_file(1, size=123)
    old_part, new_part = before["Media"][0]["Part"][0], replaced["Media"][0]["Part"][0]
    assert new_part["id"] != old_part["id"] and new_part["key"] != old_part["key"]
    assert new_part["file"] != old_part["file"] and new_part["size"] == 123
    assert replaced["updatedAt"] > with_media["updatedAt"] - 1 >= before["updatedAt"]
    assert (await _meta(client, 1))["Media"][0]["Part"][0]["id"] == new_part["id"]


async def test_websocket_notifications(fp: FakePlex, ctl: FakePlexControl) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{fp.url}/:/websockets/notifications", headers={"X-Plex-Token": fp.token}) as ws,
    ):
        await ctl.change(1, title="Changed")
        rk = await ctl.add_item(1, title="Added")
        await ctl.delete(rk)
        msgs: list[dict[str, Any]] = []
        while len([m for m in msgs if m["NotificationContainer"]["type"] == "timeline"]) < 4:
            msgs.append(await asyncio.wait_for(ws.receive_json(), 5))
    timeline = [
        m["NotificationContainer"]["TimelineEntry"][0] for m in msgs if m["NotificationContainer"]["type"] == "timeline"
    ]
    assert timeline[0]["itemID"] == "1" and timeline[0]["state"] == 5 and timeline[0]["sectionID"] == "1"
    assert timeline[1]["itemID"] == rk and timeline[1]["metadataState"] == "created" and timeline[1]["type"] == 1
    assert (timeline[3]["itemID"], timeline[3]["state"], timeline[3]["metadataState"]) == (rk, 9, "deleted")
    activity = [m for m in msgs if m["NotificationContainer"]["type"] == "activity"]
    assert activity[0]["NotificationContainer"]["ActivityNotification"][0]["event"] == "started"


async def test_websocket_requires_token(fp: FakePlex) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{fp.url}/:/websockets/notifications")


async def test_tokens_revoke_and_add(fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    new = await ctl.add_token("second")
    assert (await client.get("/library/sections", headers={"X-Plex-Token": new})).status_code == 200
    await ctl.revoke_token(fp.token)
    assert (await client.get("/library/sections")).status_code == 401
    assert (await client.get("/library/sections", headers={"X-Plex-Token": new})).status_code == 200


async def test_info_and_counters(fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    info = await ctl.info()
    assert info["url"] == fp.url and {c["uri"] for c in info["connections"]} >= {fp.url}
    await ctl.reset_stats()
    for start in (0, 10, 20):
        await client.get(f"/library/sections/1/all?X-Plex-Container-Start={start}&X-Plex-Container-Size=10")
    await client.get("/library/metadata/1")
    stats = await ctl.stats()
    assert stats == {"GET /library/sections/{section_id}/all": 3, "GET /library/metadata/{ids}": 1}
    assert await ctl.total_requests() == 4
