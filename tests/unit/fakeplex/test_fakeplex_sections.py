"""Sections added and removed at run time (a Plex user adding a library), and the process-wide base latency."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl, FakePlexControlError, Library, LibrarySpec, SectionSpec
from plexsync.fakeplex.xmltree import json_tree, xml_tree

JSON = {"Accept": "application/json"}


async def _mc(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    r = await client.get(path, headers=JSON)
    r.raise_for_status()
    return dict(r.json()["MediaContainer"])


async def test_added_movie_section_is_served_like_the_initial_ones(
    fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl
) -> None:
    before = set(fp.library.nodes)
    sec = await ctl.add_section("movie", "Films Added Later", count=25, collections=2)
    key = sec["key"]
    assert key == "4" and sec["type"] == "movie" and sec["title"] == "Films Added Later" and sec["uuid"]
    assert sec["counts"]["movie"] == 25 and sec["counts"]["collection"] == 2
    sections = await _mc(client, "/library/sections")
    listed = {d["key"]: d for d in sections["Directory"]}
    assert listed[key]["uuid"] == sec["uuid"] and listed[key]["Location"][0]["path"] == "/data/movies4"
    assert sections["size"] == 4
    count = await _mc(client, f"/library/sections/{key}/all?X-Plex-Container-Size=0")
    assert count["totalSize"] == 25 and "Metadata" not in count
    page = await _mc(
        client, f"/library/sections/{key}/all?includeGuids=1&X-Plex-Container-Start=20&X-Plex-Container-Size=10"
    )
    assert page["size"] == 5 and page["librarySectionUUID"] == sec["uuid"]
    new_keys = {int(m["ratingKey"]) for m in (await _mc(client, f"/library/sections/{key}/all"))["Metadata"]}
    assert len(new_keys) == 25 and not new_keys & before
    full = (await _mc(client, f"/library/metadata/{min(new_keys)}?includeChapters=1"))["Metadata"][0]
    assert full["librarySectionID"] == int(key) and full["Media"][0]["Part"][0]["file"].startswith("/data/movies4/")
    colls = await _mc(client, f"/library/sections/{key}/all?type=18")
    assert colls["totalSize"] == 2
    assert {c["ratingKey"] for c in colls["Metadata"]} <= {
        c["ratingKey"] for c in (await _mc(client, "/library/all?type=18"))["Metadata"]
    }
    x = await client.get(f"/library/sections/{key}/all?X-Plex-Container-Size=5")
    j = await client.get(f"/library/sections/{key}/all?X-Plex-Container-Size=5", headers=JSON)
    assert x.headers["content-type"].startswith("text/xml")
    assert xml_tree(x.content) == json_tree(j.json()["MediaContainer"])


async def test_added_show_section_has_seasons_and_episodes(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    sec = await ctl.add_section("show", "Anime", count=3, seasons=2, episodes=4)
    assert (sec["type"], sec["counts"]["show"], sec["counts"]["season"], sec["counts"]["episode"]) == ("show", 3, 6, 24)
    key = sec["key"]
    shows = (await _mc(client, f"/library/sections/{key}/all"))["Metadata"]
    seasons = await _mc(client, f"/library/metadata/{shows[0]['ratingKey']}/children")
    assert seasons["totalSize"] == 2 and seasons["librarySectionID"] == int(key)
    episodes = await _mc(client, f"/library/sections/{key}/all?type=4&X-Plex-Container-Size=0")
    assert episodes["totalSize"] == 24
    leaves = await _mc(client, f"/library/metadata/{shows[0]['ratingKey']}/allLeaves")
    assert leaves["totalSize"] == 8 and all(
        m["grandparentRatingKey"] == shows[0]["ratingKey"] for m in leaves["Metadata"]
    )


async def test_removed_section_and_its_items_are_gone_and_keys_are_not_reused(
    fp: FakePlex, client: httpx.AsyncClient, ctl: FakePlexControl
) -> None:
    sec = await ctl.add_section("other", "Home Videos", count=4)
    first = (await _mc(client, f"/library/sections/{sec['key']}/all"))["Metadata"][0]["ratingKey"]
    await _mc(client, f"/library/sections/{sec['key']}/all")  # cached page: removal must drop it
    await ctl.remove_section(sec["key"])
    assert sec["key"] not in {d["key"] for d in (await _mc(client, "/library/sections"))["Directory"]}
    assert (await client.get(f"/library/sections/{sec['key']}/all")).status_code == 404
    assert (await client.get(f"/library/metadata/{first}")).status_code == 404
    assert all(n.section_key != int(sec["key"]) for n in fp.library.nodes.values())
    again = await ctl.add_section("movie", "Movies Again", count=2)
    assert int(again["key"]) == int(sec["key"]) + 1
    again_keys = [m["ratingKey"] for m in (await _mc(client, f"/library/sections/{again['key']}/all"))["Metadata"]]
    assert first not in again_keys and min(int(k) for k in again_keys) > int(first)
    await ctl.remove_section(1)  # an initial section too
    assert (await client.get("/library/sections/1/all")).status_code == 404
    with pytest.raises(FakePlexControlError) as missing:
        await ctl.remove_section(1)
    assert missing.value.status == 404


@pytest.mark.parametrize(
    "body",
    [{"kind": "music", "title": "Music"}, {"kind": "movie", "count": -1}, {"kind": "movie", "count": "many"}, {}],
)
async def test_bad_sections_are_refused(fp: FakePlex, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=fp.url) as c:
        r = await c.post("/__fakeplex/sections", json=body)
    assert r.status_code == 400, r.text
    assert len(fp.library.sections) == 3


def test_added_sections_are_deterministic_from_the_seed() -> None:
    def build() -> list[dict[str, Any]]:
        lib = Library(LibrarySpec.from_sizes(movies=5, shows=1, seasons=1, episodes=2, other_videos=1, seed=11))
        lib.add_section(SectionSpec("movie", "More", count=6, collections=1))
        lib.add_section(SectionSpec("show", "More TV", count=1, seasons=2, episodes=2))
        return list(lib.items())

    first = build()
    assert first == build()
    keys = [int(i["ratingKey"]) for i in first]
    assert len(keys) == len(set(keys))


async def test_base_latency_delays_plex_requests_not_control_calls() -> None:
    async with (
        FakePlex(spec=LibrarySpec.from_sizes(movies=3, shows=0, other_videos=0), latency_ms=120) as fp,
        httpx.AsyncClient(base_url=fp.url, headers={"X-Plex-Token": fp.token}) as client,
        FakePlexControl(fp.url) as ctl,
    ):
        t0 = time.perf_counter()
        await client.get("/library/sections")
        assert time.perf_counter() - t0 >= 0.12
        t0 = time.perf_counter()
        info = await ctl.info()
        assert time.perf_counter() - t0 < 0.1 and info["latency_ms"] == 120
        await ctl.reset()  # clears fault rules, not the network's latency
        t0 = time.perf_counter()
        await client.get("/identity")
        assert time.perf_counter() - t0 >= 0.12
        await ctl.set_latency(0)
        t0 = time.perf_counter()
        await client.get("/identity")
        assert time.perf_counter() - t0 < 0.1


def test_base_latency_jitter_keeps_fault_sequence() -> None:
    from plexsync.fakeplex.faults import FaultInjector, FaultRule

    def run(latency: float) -> tuple[list[bool], list[float]]:
        inj = FaultInjector(seed=5, rules=[FaultRule("error", probability=0.5)])
        inj.set_base_latency(latency, latency / 10)
        decisions = [inj.decide("/library/sections") for _ in range(50)]
        return [d.action is not None for d in decisions], [d.delay_s for d in decisions]

    faults_plain, delays_plain = run(0)
    faults_slow, delays_slow = run(20)
    assert faults_plain == faults_slow and set(delays_plain) == {0.0}
    assert all(0.020 <= d <= 0.022 for d in delays_slow) and len(set(delays_slow)) > 1
