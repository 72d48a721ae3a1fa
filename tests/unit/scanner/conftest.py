"""In-process fakeplex for the scanner's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl, LibrarySpec

SPEC = LibrarySpec.from_sizes(movies=60, shows=4, seasons=2, episodes=3, other_videos=5, seed=11)


@pytest.fixture
async def fp() -> AsyncIterator[FakePlex]:
    async with FakePlex(spec=SPEC) as server:
        yield server


@pytest.fixture
async def ctl(fp: FakePlex) -> AsyncIterator[FakePlexControl]:
    async with FakePlexControl(fp.url) as c:
        yield c
