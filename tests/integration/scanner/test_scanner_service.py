"""The scanner as a real process, with real catalog, auth, PostgreSQL, NATS and fakeplex processes.

One module-scoped stack; the tests run in order and build on each other's library state: a full scan
equals fakeplex field by field (JSON), scripted changes are caught by an incremental scan that fetches
only what changed, faults do not lose or duplicate anything, XML gives the same catalog, cancel, a
killed scanner and a revoked token leave the catalog consistent.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import field_mask_pb2
from plexsync.fakeplex import FakePlexControl
from plexsync.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    events_pb2,
    scanner_pb2,
    scanner_pb2_grpc,
)

from tests.integration.scanner.support import (
    catalog_items,
    comparable,
    expected_item,
    fakeplex_items,
    fakeplex_process,
    run_scan,
    watch,
)
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(180)

INC, DEEP = common_pb2.SCAN_MODE_INCREMENTAL, common_pb2.SCAN_MODE_DEEP
FNF = common_pb2.ITEM_STATE_FILE_NOT_FOUND
TYPES = {
    "1": [(1, common_pb2.ITEM_KIND_MOVIE)],
    "2": [(2, common_pb2.ITEM_KIND_SHOW), (3, common_pb2.ITEM_KIND_SEASON), (4, common_pb2.ITEM_KIND_EPISODE)],
    "3": [(1, common_pb2.ITEM_KIND_OTHER_VIDEO)],
}
SCANNER_ENV = {
    "PLEXSYNC_SCAN_PAGE_SIZE": "25",
    "PLEXSYNC_SCAN_CONCURRENCY": "4",
    "PLEXSYNC_SCAN_BATCH_SIZE": "20",
    "PLEXSYNC_SCAN_METADATA_BATCH": "3",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_SCAN_PROGRESS_INTERVAL_SECONDS": "0.2",
    "PLEXSYNC_PLEX_MAX_RETRIES": "8",
}


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    log_dir = tmp_path_factory.mktemp("fakeplex")
    args = ["--movies", "90", "--shows", "6", "--seasons", "3", "--episodes", "6", "--other-videos", "8"]
    with fakeplex_process(log_dir, *args, "--seed", "5") as info:
        yield info


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-media")


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, fake: dict[str, Any]) -> ServiceStack:
    key = "test1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = key
    for name in ("catalog", "auth", "scanner"):
        service_stack.reserve(name)
    service_stack.start("catalog")
    service_stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
    service_stack.start("scanner", **SCANNER_ENV)
    return service_stack


@pytest.fixture(scope="module")
async def channels(stack: ServiceStack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    chans = {name: stack.channel(name) for name in ("catalog", "auth", "scanner")}
    yield chans
    for c in chans.values():
        await c.close()


@pytest.fixture(scope="module")
async def ctl(fake: dict[str, Any]) -> AsyncIterator[FakePlexControl]:
    async with FakePlexControl(fake["url"]) as c:
        yield c


@pytest.fixture(scope="module")
async def server_id(channels: dict[str, grpc.aio.Channel], fake: dict[str, Any]) -> str:
    stub = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    resp = await stub.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Test Plex"))
    return str(resp.server.id)


@pytest.fixture(scope="module")
async def libraries(
    channels: dict[str, grpc.aio.Channel], server_id: str, local_root: Path
) -> dict[str, common_pb2.Library]:
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    resp = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server_id))
    libs = {lib.plex_key: lib for lib in resp.libraries}
    catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
    # TV streams remotely; other videos live (partly) on local disk via a path rule; movies are unavailable.
    shows = common_pb2.Library(id=libs["2"].id, remote_streaming_enabled=True)
    await catalog.UpdateLibrary(
        catalog_pb2.UpdateLibraryRequest(
            library=shows, update_mask=field_mask_pb2.FieldMask(paths=["remote_streaming_enabled"])
        )
    )
    await catalog.SetPathReplacements(
        catalog_pb2.SetPathReplacementsRequest(
            server_id=server_id, rules=[common_pb2.PathReplacement(plex_path="/data/other", local_path=str(local_root))]
        )
    )
    for lib in list(libs.values()):
        libs[lib.plex_key] = (await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=lib.id))).library
    return libs


def locator(lib: common_pb2.Library, local_root: Path) -> Any:
    def locate(path: str) -> tuple[str, int]:
        local = path
        if path.startswith("/data/other/"):
            local = str(local_root) + "/" + path.removeprefix("/data/other/")
        if os.path.exists(local):
            return local, common_pb2.ITEM_STATE_NORMAL
        if lib.remote_streaming_enabled:
            return local, common_pb2.ITEM_STATE_REMOTE_ONLY
        return local, common_pb2.ITEM_STATE_UNAVAILABLE

    return locate


async def assert_catalog_matches(
    channels: dict[str, grpc.aio.Channel], libs: dict[str, common_pb2.Library], fake: dict[str, Any], root: Path
) -> None:
    """Every item and field of every library equals fakeplex's library; nothing extra, nothing twice."""
    catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
    for key, lib in libs.items():
        expected: dict[str, common_pb2.Item] = {}
        for type_num, kind in TYPES[key]:
            for d in fakeplex_items(fake["url"], fake["token"], key, type_num):
                expected[d["ratingKey"]] = expected_item(d, kind, locator(lib, root))
        got = await catalog_items(channels["catalog"], lib.id)
        present = {rk: comparable(i) for rk, i in got.items() if i.state != FNF}
        assert sorted(present) == sorted(expected), f"library {key}: items differ"
        for rk, item in expected.items():
            assert present[rk] == item, f"library {key} item {rk} differs:\n{present[rk]}\n---\n{item}"
        parents = {i.rating_key: i.id for i in got.values()}
        for i in got.values():
            if i.parent_rating_key:
                assert i.parent_id == parents[i.parent_rating_key]
        # collections and their members
        listing = fakeplex_items(fake["url"], fake["token"], key, 18)
        colls = await catalog.ListCollections(catalog_pb2.ListCollectionsRequest(library_id=lib.id, page_size=1000))
        by_key = {c.rating_key: c for c in colls.collections}
        assert sorted(by_key) == sorted(c["ratingKey"] for c in listing)
        for c in listing:
            got_c = by_key[c["ratingKey"]]
            assert got_c.title == c["title"] and got_c.smart == c.get("smart", False)
            assert got_c.child_count == c.get("childCount", 0)
        # networks land on shows
        if key == "2":
            nets = await catalog.ListNetworks(catalog_pb2.ListNetworksRequest(library_id=lib.id, page_size=1000))
            shows = [e for e in expected.values() if e.kind == common_pb2.ITEM_KIND_SHOW]
            want: dict[str, int] = {}
            for s in shows:
                for n in s.networks:
                    want[n] = want.get(n, 0) + 1
            assert {n.name: n.show_count for n in nets.networks} == want


async def test_sync_server_registers_libraries(
    channels: dict[str, grpc.aio.Channel], server_id: str, libraries: dict[str, common_pb2.Library]
) -> None:
    assert {k: lib.kind for k, lib in libraries.items()} == {
        "1": common_pb2.LIBRARY_KIND_MOVIES,
        "2": common_pb2.LIBRARY_KIND_SHOWS,
        "3": common_pb2.LIBRARY_KIND_OTHER_VIDEOS,
    }
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    again = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server_id))
    assert again.added == 0 and len(again.libraries) == 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=""))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_full_scan_equals_fakeplex(
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    local_root: Path,
    nats_url: str,
) -> None:
    # a few other videos exist on local disk
    for d in fakeplex_items(fake["url"], fake["token"], "3", 1)[:3]:
        path = local_root / d["Media"][0]["Part"][0]["file"].removeprefix("/data/other/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    nc = await nats.connect(nats_url)
    received: list[Any] = []

    async def collect(msg: Any) -> None:
        received.append(msg)

    sub = await nc.subscribe("plexsync.v1.scan.>", cb=collect)
    try:
        for key in ("1", "2", "3"):
            scan, events = await run_scan(channels["scanner"], libraries[key].id)
            assert scan.status == common_pb2.SCAN_STATUS_COMPLETED, scan.error
            kinds = [e.WhichOneof("payload") for e in events]
            assert kinds[0] == "started" and kinds[-1] == "completed" and "progress" in kinds
            done = events[-1].completed.counts
            assert done.seen == done.total == done.added > 0 and done.failed == 0
        await asyncio.sleep(0.5)
    finally:
        await sub.unsubscribe()
        await nc.close()
    assert received
    for msg in received:
        event = events_pb2.ScanEvent.FromString(msg.data)
        assert msg.headers["Nats-Msg-Id"] == event.event_id
        assert msg.subject == f"plexsync.v1.scan.{event.library_id}.{event.WhichOneof('payload')}"
    await assert_catalog_matches(channels, libraries, fake, local_root)


async def test_incremental_scan_catches_every_change_and_fetches_only_those(
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    local_root: Path,
    ctl: FakePlexControl,
) -> None:
    # nothing changed: no metadata fetched at all
    await ctl.reset_stats()
    for key in ("1", "2", "3"):
        scan, _ = await run_scan(channels["scanner"], libraries[key].id)
        assert scan.status == common_pb2.SCAN_STATUS_COMPLETED and scan.counts.fetched == 0
        assert scan.counts.unchanged == scan.counts.seen
    assert not any(k.split(" ", 1)[1] == "/library/metadata/{ids}" for k in await ctl.stats())
    movies = fakeplex_items(fake["url"], fake["token"], "1", 1)
    shows = fakeplex_items(fake["url"], fake["token"], "2", 2)
    seasons = fakeplex_items(fake["url"], fake["token"], "2", 3)
    episodes = fakeplex_items(fake["url"], fake["token"], "2", 4)
    await ctl.add_item(1, title="Ein neuer Film ✨")
    await ctl.change(movies[0]["ratingKey"], title="Edited", summary="New plot", Genre=[{"tag": "Western"}])
    await ctl.add_media(movies[1]["ratingKey"])
    await ctl.replace_file(movies[2]["ratingKey"], file="/data/movies/replaced.mkv")
    await ctl.delete(movies[3]["ratingKey"])
    ep = episodes[0]
    target = next(s for s in seasons if s["ratingKey"] != ep["parentRatingKey"])
    await ctl.move(ep["ratingKey"], target["ratingKey"], index=42)
    await ctl.change(shows[1]["ratingKey"], title="Renamed Show")
    new_season = await ctl.add_item(2, parent=shows[2]["ratingKey"])
    await ctl.add_item(2, parent=new_season)
    await ctl.delete(episodes[-1]["ratingKey"])
    await ctl.reset_stats()
    for key in ("1", "2"):
        scan, _ = await run_scan(channels["scanner"], libraries[key].id)
        assert scan.status == common_pb2.SCAN_STATUS_COMPLETED, scan.error
        assert scan.counts.failed == 0
        assert scan.counts.missing == 1
    stats = await ctl.stats()
    # movies: 1 new + 3 changed; shows: moved episode, both its seasons (roll-up), their shows,
    # the renamed show, the new season + episode, the deleted episode's season and show.
    assert stats.get("GET /library/metadata/{ids}", 0) <= 4 + 12
    await assert_catalog_matches(channels, libraries, fake, local_root)


async def test_faults_lose_and_duplicate_nothing(
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    local_root: Path,
    ctl: FakePlexControl,
) -> None:
    movies = fakeplex_items(fake["url"], fake["token"], "1", 1)
    episodes = fakeplex_items(fake["url"], fake["token"], "2", 4)
    for m in movies[5:15]:
        await ctl.change(m["ratingKey"], title=m["title"] + " (remastered)")
    for e in episodes[3:9]:
        await ctl.replace_file(e["ratingKey"])
    await ctl.add_item(1)
    await ctl.set_faults(
        [
            {"kind": "latency", "probability": 0.3, "latency_ms": 10, "jitter_ms": 20},
            {"kind": "error", "probability": 0.1, "status": 500},
            {"kind": "error", "probability": 0.03, "status": 503, "retry_after": 0},
            {"kind": "rate_limit", "probability": 0.03, "retry_after": 0},
            {"kind": "drop", "probability": 0.03},
        ],
        seed=7,
    )
    try:
        for key in ("1", "2", "3"):
            scan, _ = await run_scan(channels["scanner"], libraries[key].id, DEEP if key == "3" else INC)
            assert scan.status == common_pb2.SCAN_STATUS_COMPLETED, scan.error
            assert scan.counts.failed == 0
    finally:
        await ctl.clear_faults()
    await assert_catalog_matches(channels, libraries, fake, local_root)


async def test_cancel_and_one_scan_per_library(
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    local_root: Path,
    ctl: FakePlexControl,
) -> None:
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    lib = libraries["1"]
    await ctl.add_fault("latency", latency_ms=200, path_prefix="/library/metadata")
    try:
        started = await scanner.ScanLibrary(scanner_pb2.ScanLibraryRequest(library_id=lib.id, mode=DEEP))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await scanner.ScanLibrary(scanner_pb2.ScanLibraryRequest(library_id=lib.id))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        cancelled = await scanner.CancelScan(scanner_pb2.CancelScanRequest(scan_id=started.scan.id))
        assert loop.time() - t0 < 1.0
        assert cancelled.scan.status == common_pb2.SCAN_STATUS_CANCELLED
        events = await watch(channels["scanner"], started.scan.id)
        assert events[0].WhichOneof("payload") == "started" and events[-1].WhichOneof("payload") == "cancelled"
    finally:
        await ctl.clear_faults()
    items = await catalog_items(channels["catalog"], lib.id)
    assert sum(1 for i in items.values() if i.state == FNF) == 1  # only the movie deleted earlier
    scan, _ = await run_scan(channels["scanner"], lib.id)
    assert scan.status == common_pb2.SCAN_STATUS_COMPLETED
    history = await scanner.ListScans(scanner_pb2.ListScansRequest(library_id=lib.id, page_size=2))
    assert [s.status for s in history.scans] == [common_pb2.SCAN_STATUS_COMPLETED, common_pb2.SCAN_STATUS_CANCELLED]
    assert history.next_page_token
    more = await scanner.ListScans(
        scanner_pb2.ListScansRequest(library_id=lib.id, page_size=100, page_token=history.next_page_token)
    )
    assert len(more.scans) >= 4 and all(s.status == common_pb2.SCAN_STATUS_COMPLETED for s in more.scans)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scanner.GetScan(scanner_pb2.GetScanRequest(scan_id="not-a-uuid"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_killed_scanner_is_reaped_and_next_scan_converges(
    stack: ServiceStack,
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    local_root: Path,
    ctl: FakePlexControl,
) -> None:
    lib = libraries["2"]
    for e in fakeplex_items(fake["url"], fake["token"], "2", 4)[10:20]:
        await ctl.change(e["ratingKey"], title=e["title"] + " ✂")
    await ctl.add_fault("latency", latency_ms=100, path_prefix="/library/metadata")
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    started = await scanner.ScanLibrary(scanner_pb2.ScanLibraryRequest(library_id=lib.id, mode=DEEP))
    await asyncio.sleep(1.0)
    child = next(c for c in stack.children if c.name == "scanner")
    os.kill(child.pid, signal.SIGKILL)
    if child.popen is not None:
        await asyncio.to_thread(child.popen.wait, 5)
    stack.children.remove(child)
    await ctl.clear_faults()
    await asyncio.to_thread(stack.start, "scanner", **SCANNER_ENV, PLEXSYNC_PLEX_FORMAT="xml")
    old = await scanner.GetScan(scanner_pb2.GetScanRequest(scan_id=started.scan.id))
    assert old.scan.status == common_pb2.SCAN_STATUS_FAILED and "stopped" in old.scan.error
    events = await watch(channels["scanner"], started.scan.id)
    assert events[-1].WhichOneof("payload") == "failed"
    # the restarted scanner speaks XML to Plex: the same catalog, nothing rewritten that did not change
    for key in ("1", "2", "3"):
        scan, _ = await run_scan(channels["scanner"], libraries[key].id, DEEP)
        assert scan.status == common_pb2.SCAN_STATUS_COMPLETED, scan.error
        if key != "2":
            assert scan.counts.updated == 0 and scan.counts.added == 0
    await assert_catalog_matches(channels, libraries, fake, local_root)


async def test_revoked_token_fails_with_a_clear_event(
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    ctl: FakePlexControl,
) -> None:
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    lib = libraries["1"]
    await ctl.add_fault("latency", latency_ms=100, path_prefix="/library/metadata")
    try:
        started = await scanner.ScanLibrary(scanner_pb2.ScanLibraryRequest(library_id=lib.id, mode=DEEP))
        await asyncio.sleep(0.7)
        await ctl.revoke_token(fake["token"])  # Plex answers 401 mid-scan; auth's re-check confirms it
        events = await watch(channels["scanner"], started.scan.id)
        # once auth knows the token is bad, the next scan fails before it talks to Plex
        again, again_events = await run_scan(channels["scanner"], libraries["3"].id)
    finally:
        await ctl.clear_faults()
        await ctl.add_token(fake["token"])
    failed = events[-1].failed
    assert failed.code == "UNAUTHENTICATED" and failed.server_name == "Test Plex"
    assert "401" in failed.error and "Test Plex" in failed.error and fake["token"] not in failed.error
    scan = (await scanner.GetScan(scanner_pb2.GetScanRequest(scan_id=started.scan.id))).scan
    assert scan.status == common_pb2.SCAN_STATUS_FAILED and scan.error == failed.error
    assert again.status == common_pb2.SCAN_STATUS_FAILED
    assert again_events[-1].failed.code == "FAILED_PRECONDITION" and "Test Plex" in again.error
    for key in ("1", "3"):
        items = await catalog_items(channels["catalog"], libraries[key].id)
        assert sum(1 for i in items.values() if i.state == FNF) == (1 if key == "1" else 0)
