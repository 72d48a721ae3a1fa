"""Shared fixtures: a small in-process fakeplex per test (building one takes milliseconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl, LibrarySpec

SMALL = LibrarySpec.from_sizes(movies=40, shows=4, seasons=2, episodes=3, other_videos=4, seed=7)


@pytest.fixture
async def fp() -> AsyncIterator[FakePlex]:
    async with FakePlex(spec=SMALL) as server:
        yield server


@pytest.fixture
async def client(fp: FakePlex) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fp.url, headers={"X-Plex-Token": fp.token}, timeout=10) as c:
        yield c


@pytest.fixture
async def ctl(fp: FakePlex) -> AsyncIterator[FakePlexControl]:
    async with FakePlexControl(fp.url) as c:
        yield c
