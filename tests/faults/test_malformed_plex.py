"""A hostile or broken Plex server: every kind of malformed answer on listings and on metadata.

Real catalog, auth and scanner processes and a fakeplex process; one clean scan, then per malformed variant an
incremental and a deep scan of both libraries with the fault on. Each scan ends as designed (a broken page fails
it with an error naming the path; a broken entry skips that item only), the catalog keeps exactly what it held
(nothing FILE_NOT_FOUND, nothing twice), the scanner stays up, SERVING and small; once the fault is cleared the
next scan equals fakeplex's library again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plexsync.fakeplex import FakePlexControl
from plexsync.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
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
)
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(150)

INC, DEEP = common_pb2.SCAN_MODE_INCREMENTAL, common_pb2.SCAN_MODE_DEEP
COMPLETED, FAILED = common_pb2.SCAN_STATUS_COMPLETED, common_pb2.SCAN_STATUS_FAILED
FNF = common_pb2.ITEM_STATE_FILE_NOT_FOUND
TYPES = {
    "1": [(1, common_pb2.ITEM_KIND_MOVIE)],
    "2": [(2, common_pb2.ITEM_KIND_SHOW), (3, common_pb2.ITEM_KIND_SEASON), (4, common_pb2.ITEM_KIND_EPISODE)],
}
SCANNER_ENV = {
    "PLEXSYNC_SCAN_PAGE_SIZE": "10",  # 30 movies and 12 episodes span pages: duplicates across pages, totals matter
    "PLEXSYNC_SCAN_CONCURRENCY": "4",
    "PLEXSYNC_SCAN_BATCH_SIZE": "20",
    "PLEXSYNC_SCAN_METADATA_BATCH": "5",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.02",
    "PLEXSYNC_PLEX_MAX_RETRIES": "3",
}
LISTING, METADATA = "/library/sections/", "/library/metadata/"
MAX_RSS_MB = 400

# (variant, where, the status of a scan with the fault on, what the error says). On listings a broken page fails
# the scan; a broken entry skips its item but the same corruption of the collections listing fails the scan (a
# collection not written would be deleted); duplicates and impossible totals are survived. On metadata every
# broken answer fails only its items (counted) and an incremental scan of an unchanged library fetches nothing.
CASES: list[tuple[str, str, int, str]] = [
    ("truncated_json", LISTING, FAILED, "JSON that does not parse"),
    ("truncated_xml", LISTING, FAILED, "XML that does not parse"),
    ("wrong_types", LISTING, FAILED, "not a number"),
    ("missing_keys", LISTING, FAILED, "no ratingKey"),
    ("duplicate_keys", LISTING, COMPLETED, ""),
    ("negative_total", LISTING, COMPLETED, ""),
    ("absurd_total", LISTING, COMPLETED, ""),
    ("huge_title", LISTING, FAILED, "bytes, more than the"),
    ("invalid_utf8", LISTING, FAILED, "does not parse"),
    ("deep_xml", LISTING, FAILED, "nested deeper"),
    ("entity_bomb", LISTING, FAILED, "document type declaration"),
    ("truncated_xml", METADATA, COMPLETED, ""),
    ("wrong_types", METADATA, COMPLETED, ""),
    ("missing_keys", METADATA, COMPLETED, ""),
    ("duplicate_keys", METADATA, COMPLETED, ""),
    ("invalid_utf8", METADATA, COMPLETED, ""),
    ("entity_bomb", METADATA, COMPLETED, ""),
]
# Metadata variants whose every answer is broken (so a deep scan fails every item) vs. broken in its first entry.
WHOLE_ANSWER = {"truncated_xml", "invalid_utf8", "entity_bomb"}


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    args = ["--movies", "30", "--shows", "2", "--seasons", "2", "--episodes", "3", "--other-videos", "0"]
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), *args, "--seed", "11") as info:
        yield info


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, fake: dict[str, Any]) -> ServiceStack:
    service_stack.start_plex_services(fake["url"], SCANNER_ENV)
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
async def libraries(channels: dict[str, grpc.aio.Channel], fake: dict[str, Any]) -> dict[str, common_pb2.Library]:
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    server = await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Hostile"))
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    resp = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server.server.id))
    libs = {lib.plex_key: lib for lib in resp.libraries if lib.plex_key in TYPES}
    catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
    # every file is "remote only": no local disk is involved, the states stay put
    for lib in libs.values():
        await catalog.UpdateLibrary(
            catalog_pb2.UpdateLibraryRequest(
                library=common_pb2.Library(id=lib.id, remote_streaming_enabled=True),
                update_mask=field_mask_pb2.FieldMask(paths=["remote_streaming_enabled"]),
            )
        )
    return libs


def expected(fake: dict[str, Any], key: str) -> dict[str, common_pb2.Item]:
    out = {}
    for type_num, kind in TYPES[key]:
        for d in fakeplex_items(fake["url"], fake["token"], key, type_num):
            out[d["ratingKey"]] = expected_item(d, kind, lambda path: (path, common_pb2.ITEM_STATE_REMOTE_ONLY))
    return out


async def snapshot(channels: dict[str, grpc.aio.Channel], libs: dict[str, common_pb2.Library]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, lib in libs.items():
        items = await catalog_items(channels["catalog"], lib.id)  # asserts no rating key twice
        assert not [rk for rk, i in items.items() if i.state == FNF], f"library {key}: items FILE_NOT_FOUND"
        out[key] = {rk: comparable(i) for rk, i in items.items()}
    return out


async def assert_scanner_healthy(stack: ServiceStack, channels: dict[str, grpc.aio.Channel]) -> None:
    child = next(c for c in stack.children if c.name == "scanner")
    assert child.alive(), "the scanner process died"
    reply = await health_pb2_grpc.HealthStub(channels["scanner"]).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    rss = psutil.Process(child.pid).memory_info().rss / 1e6
    assert rss < MAX_RSS_MB, f"scanner RSS {rss:.0f} MB"


@pytest.fixture(scope="module")
async def clean(
    channels: dict[str, grpc.aio.Channel], libraries: dict[str, common_pb2.Library], fake: dict[str, Any]
) -> dict[str, Any]:
    """The first scan: the catalog equals fakeplex; what every later check compares with."""
    for lib in libraries.values():
        scan, _ = await run_scan(channels["scanner"], lib.id, INC)
        assert scan.status == COMPLETED, scan.error
    before = await snapshot(channels, libraries)
    for key in libraries:
        assert before[key] == expected(fake, key)
    return before


@pytest.mark.parametrize(
    ("variant", "where", "status", "says"), CASES, ids=[f"{c[0]}-{c[1].split('/')[2]}" for c in CASES]
)
async def test_malformed_answers_lose_nothing(
    stack: ServiceStack,
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    ctl: FakePlexControl,
    clean: dict[str, Any],
    variant: str,
    where: str,
    status: int,
    says: str,
) -> None:
    await ctl.add_fault("malformed", variant=variant, path_prefix=where)  # type: ignore[arg-type]
    try:
        for mode in (INC, DEEP):
            for key, lib in libraries.items():
                scan, events = await run_scan(channels["scanner"], lib.id, mode, wait=60)
                what = f"{variant} on {where}, library {key}, mode {mode}: {scan.error}"
                assert scan.status == status, what
                assert fake["token"] not in scan.error
                if status == FAILED:
                    assert f"{where}{lib.plex_key}/all" in scan.error and says in scan.error, what
                    assert events[-1].WhichOneof("payload") == "failed"
                elif where == METADATA and mode == DEEP and variant in WHOLE_ANSWER:
                    assert scan.counts.failed == len(clean[key]) and scan.counts.added == 0, what
                elif where == METADATA and mode == DEEP and variant in ("wrong_types", "missing_keys"):
                    assert 0 < scan.counts.failed < len(clean[key]), what
                else:
                    assert scan.counts.failed == 0 and scan.counts.missing == 0, what
                assert await snapshot(channels, libraries) == clean, what
        await assert_scanner_healthy(stack, channels)
    finally:
        await ctl.clear_faults()
    for key, lib in libraries.items():
        scan, _ = await run_scan(channels["scanner"], lib.id, INC, wait=60)
        assert scan.status == COMPLETED and scan.counts.failed == 0, scan.error
        assert (await snapshot(channels, libraries))[key] == expected(fake, key)
