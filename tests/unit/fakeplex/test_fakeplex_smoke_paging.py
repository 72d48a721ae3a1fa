"""Page through a 10,000-item library in JSON and XML; every item must come back exactly once."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import httpx
import pytest
from plexsync.fakeplex import FakePlex, LibrarySpec

PAGE = 500


@pytest.fixture(scope="module")
async def big() -> AsyncIterator[FakePlex]:
    spec = LibrarySpec.from_sizes(movies=10_000, shows=0, other_videos=0, seed=11)
    async with FakePlex(spec=spec) as fp:
        yield fp


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_pages_cover_every_item_once(big: FakePlex, fmt: str) -> None:
    seen: list[str] = []
    total = None
    headers = {"X-Plex-Token": big.token}
    if fmt == "json":
        headers["Accept"] = "application/json"
    async with httpx.AsyncClient(base_url=big.url, headers=headers, timeout=30) as c:
        start = 0
        while total is None or start < total:
            r = await c.get(
                "/library/sections/1/all", params={"X-Plex-Container-Start": start, "X-Plex-Container-Size": PAGE}
            )
            r.raise_for_status()
            if fmt == "json":
                mc = r.json()["MediaContainer"]
                total = mc["totalSize"]
                keys = [m["ratingKey"] for m in mc.get("Metadata", [])]
            else:
                root = ET.fromstring(r.content)
                total = int(root.attrib["totalSize"])
                keys = [v.attrib["ratingKey"] for v in root.findall("Video")]
            assert keys, f"empty page at {start}"
            seen.extend(keys)
            start += len(keys)
    assert total == 10_000
    assert len(seen) == len(set(seen)) == 10_000
    assert set(seen) == {str(rk) for rk in big.library.list_keys(1)}
