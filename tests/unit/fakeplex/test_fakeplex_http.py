"""The Plex Media Server side over HTTP: paging, formats, tokens, endpoints."""

from __future__ import annotations

import httpx
import pytest
from plexsync.fakeplex import FakePlex
from plexsync.fakeplex.xmltree import json_tree, xml_tree

JSON = {"Accept": "application/json"}


async def test_paging_query_parameters(client: httpx.AsyncClient, fp: FakePlex) -> None:
    r = await client.get(
        "/library/sections/1/all", params={"X-Plex-Container-Start": 5, "X-Plex-Container-Size": 10}, headers=JSON
    )
    mc = r.json()["MediaContainer"]
    assert (mc["size"], mc["offset"], mc["totalSize"]) == (10, 5, 40)
    assert [m["ratingKey"] for m in mc["Metadata"]] == [str(k) for k in fp.library.list_keys(1)[5:15]]
    assert r.headers["X-Plex-Container-Start"] == "5"
    assert r.headers["X-Plex-Container-Total-Size"] == "40"


async def test_paging_headers(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/library/sections/1/all", headers={**JSON, "X-Plex-Container-Start": "35", "X-Plex-Container-Size": "10"}
    )
    mc = r.json()["MediaContainer"]
    assert (mc["size"], mc["offset"], mc["totalSize"]) == (5, 35, 40)


async def test_size_zero_returns_counts_only(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/library/sections/2/all?type=4&X-Plex-Container-Start=0&X-Plex-Container-Size=0", headers=JSON
    )
    mc = r.json()["MediaContainer"]
    assert mc["size"] == 0 and mc["totalSize"] == 24 and "Metadata" not in mc
    x = await client.get("/library/sections/2/all?type=4&X-Plex-Container-Start=0&X-Plex-Container-Size=0")
    tag, attrs, children = xml_tree(x.content)
    assert tag == "MediaContainer" and attrs["totalSize"] == "24" and children == []


@pytest.mark.parametrize(
    "path",
    [
        "/library/sections",
        "/library/sections/1/all?includeGuids=1",
        "/library/sections/2/all",
        "/library/sections/2/all?type=3",
        "/library/sections/2/all?type=4",
        "/library/all?type=18",
        "/library/tags?type=319",
        "/library/metadata/1?includeChapters=1",
        "/library/metadata/41/children",
        "/library/metadata/41/allLeaves",
        "/identity",
        "/",
    ],
)
async def test_json_and_xml_agree(client: httpx.AsyncClient, path: str) -> None:
    j = await client.get(path, headers=JSON)
    x = await client.get(path)
    assert j.status_code == x.status_code == 200
    assert x.headers["content-type"].startswith("text/xml")
    assert xml_tree(x.content) == json_tree(j.json()["MediaContainer"])


async def test_xml_nesting_media_part_stream(client: httpx.AsyncClient) -> None:
    x = await client.get("/library/metadata/1")
    _, _, items = xml_tree(x.content)
    video = items[0]
    assert video[0] == "Video"
    media = [c for c in video[2] if c[0] == "Media"]
    assert media and all(p[0] == "Part" for m in media for p in m[2])
    streams = [s for m in media for p in m[2] for s in p[2]]
    assert streams and {s[0] for s in streams} == {"Stream"}
    assert {"id", "streamType", "codec"} <= set(streams[0][1])
    assert any(c[0] == "Genre" for c in video[2])


async def test_listing_omits_streams_and_guids_unless_asked(client: httpx.AsyncClient) -> None:
    plain = (await client.get("/library/sections/1/all?X-Plex-Container-Size=5", headers=JSON)).json()
    item = plain["MediaContainer"]["Metadata"][0]
    assert "Guid" not in item and "Stream" not in item["Media"][0]["Part"][0]
    guids = (await client.get("/library/sections/1/all?includeGuids=1&X-Plex-Container-Size=5", headers=JSON)).json()
    assert any("Guid" in m for m in guids["MediaContainer"]["Metadata"])


async def test_shows_seasons_episodes(client: httpx.AsyncClient, fp: FakePlex) -> None:
    show = fp.library.list_keys(2)[0]
    seasons = (await client.get(f"/library/metadata/{show}/children", headers=JSON)).json()["MediaContainer"]
    assert [m["type"] for m in seasons["Metadata"]] == ["season", "season"]
    season = seasons["Metadata"][1]["ratingKey"]
    eps = (await client.get(f"/library/metadata/{season}/children?X-Plex-Container-Size=2", headers=JSON)).json()
    mc = eps["MediaContainer"]
    assert mc["totalSize"] == 3 and mc["size"] == 2
    assert all(m["parentRatingKey"] == season and m["parentIndex"] == 2 for m in mc["Metadata"])
    leaves = (await client.get(f"/library/metadata/{show}/allLeaves", headers=JSON)).json()["MediaContainer"]
    assert leaves["totalSize"] == 6


async def test_collections_and_networks(client: httpx.AsyncClient, fp: FakePlex) -> None:
    colls = (await client.get("/library/all?type=18", headers=JSON)).json()["MediaContainer"]
    assert colls["totalSize"] == len(fp.library.sections[1].collections) + len(fp.library.sections[2].collections)
    c = colls["Metadata"][0]
    assert c["type"] == "collection" and c["childCount"] > 0
    kids = (await client.get(f"/library/collections/{c['ratingKey']}/children", headers=JSON)).json()["MediaContainer"]
    assert kids["totalSize"] == c["childCount"]
    assert all(any(t["tag"] == c["title"] for t in m.get("Collection", [])) for m in kids["Metadata"])
    per_section = (await client.get("/library/sections/1/collections", headers=JSON)).json()["MediaContainer"]
    via_type = (await client.get("/library/sections/1/all?type=18", headers=JSON)).json()["MediaContainer"]
    assert per_section["totalSize"] == via_type["totalSize"] == len(fp.library.sections[1].collections)
    tags = (await client.get("/library/tags?type=319", headers=JSON)).json()["MediaContainer"]["Directory"]
    net = tags[0]
    shows = (await client.get(f"/library/sections/2/all?network={net['id']}", headers=JSON)).json()
    found = shows["MediaContainer"].get("Metadata", [])
    assert found and all(m["Network"][0]["id"] == net["id"] for m in found)


async def test_token_required(fp: FakePlex) -> None:
    async with httpx.AsyncClient(base_url=fp.url) as anon:
        r = await anon.get("/library/sections")
        assert r.status_code == 401
        assert (await anon.get("/library/sections", headers={"X-Plex-Token": "nope"})).status_code == 401
        assert (await anon.get(f"/library/sections?X-Plex-Token={fp.token}")).status_code == 200
        assert (await anon.get("/library/sections", headers={"X-Plex-Token": fp.token})).status_code == 200
        ident = await anon.get("/identity", headers=JSON)
        assert ident.status_code == 200
        assert ident.json()["MediaContainer"]["machineIdentifier"] == fp.machine_identifier


async def test_not_found(client: httpx.AsyncClient) -> None:
    assert (await client.get("/library/metadata/999999")).status_code == 404
    assert (await client.get("/library/sections/99/all")).status_code == 404


async def test_metadata_several_ids(client: httpx.AsyncClient) -> None:
    mc = (await client.get("/library/metadata/1,2,3", headers=JSON)).json()["MediaContainer"]
    assert [m["ratingKey"] for m in mc["Metadata"]] == ["1", "2", "3"]
