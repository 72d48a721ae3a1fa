"""Scan stats (counted per Plex request and catalog batch) and the job runner's bounded memory of cancels."""

from __future__ import annotations

from plexsync.fakeplex import FakePlex, FakePlexControl
from plexsync.scanner.jobs import RecentCancels
from plexsync.scanner.library_scanner import Counters, LibraryScanner, ScanOptions
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_client import PlexClient, PlexCredentials
from plexsync.scanner.stats import METADATA_ENDPOINT, ScanStats
from plexsync.v1 import common_pb2

from tests.unit.scanner.fakes import MemoryCatalog


def test_requests_are_counted_per_category() -> None:
    stats = ScanStats()
    stats.plex_request("/library/sections/{id}/all", 0.25, 1000)
    stats.plex_request(METADATA_ENDPOINT, 0.5, 3000)
    stats.plex_request("/library/metadata/{id}/children", 0.125, 500)
    stats.catalog_write(0.75)
    stats.catalog_write(0.25)
    assert (stats.plex_requests, stats.plex_bytes) == (3, 4500)
    assert (stats.listing_seconds, stats.metadata_seconds, stats.catalog_write_seconds) == (0.375, 0.5, 1.0)
    proto = stats.to_proto()
    assert proto.plex_requests == 3 and proto.plex_bytes == 4500
    assert proto.listing_time.ToMilliseconds() == 375 and proto.metadata_time.ToMilliseconds() == 500
    assert proto.catalog_write_time.ToMilliseconds() == 1000
    assert stats.span_attributes()["plexsync.scan.plex_requests"] == 3


def test_stats_survive_their_json_column_exactly() -> None:
    stats = ScanStats(plex_requests=7, plex_bytes=12345, listing_seconds=0.1 + 0.2, metadata_seconds=1 / 3)
    again = ScanStats.from_json(stats.to_json())
    assert again == stats and again.to_proto() == stats.to_proto()
    assert ScanStats.from_json({}) == ScanStats() and ScanStats.from_json(None) == ScanStats()


async def test_plex_client_counts_retries_bytes_and_time(fp: FakePlex, ctl: FakePlexControl) -> None:
    stats = ScanStats()
    await ctl.add_fault("error", status=503, path_prefix="/library/sections", times=1)
    async with PlexClient(PlexCredentials(fp.url, fp.token), backoff=0.01, stats=stats) as plex:
        sections = await plex.sections()
        assert stats.plex_requests == 2  # the 503 and its retry
        assert stats.metadata_seconds == 0 and stats.listing_seconds > 0
        listed = stats.plex_bytes
        pages = [p async for p in plex.section_items(sections[0].key, 1, page_size=10)]
        await plex.metadata([m.rating_key for m in pages[0].items[:3]])
    assert stats.plex_requests == 2 + 6 + 1  # sections, 6 listing pages of 10, one metadata request
    assert stats.plex_bytes > listed > 0
    assert stats.metadata_seconds > 0


async def test_a_scan_counts_the_catalogs_time(fp: FakePlex) -> None:
    cat = MemoryCatalog(common_pb2.Library(id="lib-1", plex_key="1", kind=common_pb2.LIBRARY_KIND_MOVIES))
    stats = ScanStats()

    async def on_error(rk: str, title: str, message: str, status: int) -> None:
        raise AssertionError(message)

    async with PlexClient(PlexCredentials(fp.url, fp.token), backoff=0.01, stats=stats) as plex:
        await LibraryScanner(
            plex,
            cat,
            cat.library,
            "scan-1",
            common_pb2.SCAN_MODE_DEEP,
            FileStates(PathMapper([]), remote_streaming=False),
            ScanOptions(batch_size=20),
            Counters(),
            on_error,
            stats=stats,
        ).run()
    assert stats.catalog_write_seconds > 0 and stats.metadata_seconds > 0 and stats.plex_requests > 3


def test_recent_cancels_are_bounded_and_repeats_are_recognised() -> None:
    cancels = RecentCancels(capacity=3)
    assert cancels.add("a", "why a")
    assert not cancels.add("a", "again")  # a repeated command changes nothing
    assert cancels.get("a") == "why a"
    for job in ("b", "c", "d"):
        cancels.add(job, job)
    assert len(cancels) == 3 and cancels.get("a") is None and cancels.get("d") == "d"
