"""The typed Plex client and models against an in-process fakeplex: JSON and XML, paging, retries, 401."""

from __future__ import annotations

import httpx
import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl
from plexsync.scanner.plex_client import (
    PlexClient,
    PlexCredentials,
    PlexNotFoundError,
    PlexUnauthorizedError,
    PlexUnavailableError,
    collect,
)


class Recorder(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.headers: list[httpx.Headers] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        self.headers.append(request.headers)
        return await super().handle_async_request(request)


def client(fp: FakePlex, fmt: str = "json", **kw: object) -> PlexClient:
    return PlexClient(PlexCredentials(fp.url, fp.token), fmt=fmt, backoff=0.01, **kw)  # type: ignore[arg-type]


async def test_sections_and_paging_same_in_json_and_xml(fp: FakePlex) -> None:
    results = {}
    for fmt in ("json", "xml"):
        async with client(fp, fmt) as plex:
            sections = await plex.sections()
            assert [(s.key, s.type, s.agent) for s in sections] == [
                ("1", "movie", "tv.plex.agents.movie"),
                ("2", "show", "tv.plex.agents.series"),
                ("3", "movie", "com.plexapp.agents.none"),
            ]
            assert sections[0].locations == ["/data/movies"]
            pages = [p async for p in plex.section_items("1", 1, page_size=25)]
            assert [len(p.items) for p in pages] == [25, 25, 10]
            assert all(p.total_size == 60 for p in pages)
            assert await plex.section_count("2", 4) == 24
            keys = [m.rating_key for p in pages for m in p.items]
            full = await plex.metadata(keys[:5])
            leaves = await collect(plex.all_leaves(pages[0].items[0].rating_key, page_size=10))
            results[fmt] = (pages, full, leaves)
    assert results["json"] == results["xml"]
    full = results["json"][1]
    assert len(full) == 5 and all(m.media and m.media[0].parts[0].streams for m in full)
    assert any(m.chapters for m in full)
    assert all(m.roles for m in full)


async def test_token_only_in_header(fp: FakePlex) -> None:
    rec = Recorder()
    async with client(fp, transport=rec) as plex:
        await plex.sections()
        await plex.metadata(["1"])
    assert rec.urls and all(fp.token not in u for u in rec.urls)
    assert all(h["X-Plex-Token"] == fp.token and h["Accept"] == "application/json" for h in rec.headers)
    assert all(h["X-Plex-Client-Identifier"] for h in rec.headers)


async def test_retries_5xx_429_and_drops(fp: FakePlex, ctl: FakePlexControl) -> None:
    await ctl.add_fault("error", status=503, retry_after=0, times=2, path_prefix="/library/sections")
    await ctl.add_fault("rate_limit", retry_after=0, times=1, path_prefix="/library/sections")
    await ctl.add_fault("drop", times=1, path_prefix="/library/sections")
    await ctl.add_fault("malformed", times=1, path_prefix="/library/sections")
    async with client(fp) as plex:
        assert len(await plex.sections()) == 3
        assert plex.retries == 5
    await ctl.add_fault("error", status=500, path_prefix="/library/metadata")
    async with client(fp, max_retries=2) as plex:
        with pytest.raises(PlexUnavailableError) as info:
            await plex.metadata(["1"])
        assert info.value.status == 500 and fp.token not in str(info.value)


async def test_404_and_401_with_one_recheck(fp: FakePlex, ctl: FakePlexControl) -> None:
    async with client(fp) as plex:
        with pytest.raises(PlexNotFoundError):
            await plex.metadata(["999999"])
    asked: list[bool] = []

    async def refresh(recheck: bool) -> PlexCredentials:
        asked.append(recheck)
        return PlexCredentials(fp.url, fp.token)

    async with PlexClient(PlexCredentials(fp.url, "wrong"), refresh=refresh) as plex:
        assert len(await plex.sections()) == 3  # renewed once, then fine
    assert asked == [True]
    asked.clear()
    await ctl.revoke_token(fp.token)
    async with PlexClient(PlexCredentials(fp.url, fp.token), refresh=refresh) as plex:
        with pytest.raises(PlexUnauthorizedError) as info:
            await plex.sections()
    assert asked == [True]
    assert info.value.status == 401
