"""The change log and WatchChanges, MarkItemsMissing and the per-library real-time flag, against a real catalog."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from plexsync.common.grpc_errors import field_violations
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

from tests.integration.catalog.changefeed import collect, summary
from tests.integration.catalog.helpers import C, batch, movie, new_library, write
from tests.support.stack import ServiceStack

Stub = catalog_pb2_grpc.CatalogServiceStub
DB = psycopg.Connection[Any]
Watch = catalog_pb2.WatchChangesRequest


@pytest.fixture(scope="module")
async def as_scanner(service_stack: ServiceStack, catalog: Stub) -> Any:
    channel = service_stack.channel("catalog", "scanner")
    try:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)
    finally:
        await channel.close()


async def finish(stub: Stub, lib: str, scan: str) -> catalog_pb2.FinishScanResponse:
    request = catalog_pb2.FinishScanRequest(library_id=lib, scan_id=scan, mode=C.SCAN_MODE_INCREMENTAL)
    reply: catalog_pb2.FinishScanResponse = await stub.FinishScan(request)
    return reply


# ---- realtime_enabled ----------------------------------------------------------------------------------


async def test_realtime_enabled_defaults_on_and_is_updatable(catalog: Stub, service_stack: ServiceStack) -> None:
    lib = await new_library(catalog)
    assert (await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=lib))).library.realtime_enabled
    request = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=lib, realtime_enabled=False),
        update_mask=field_mask_pb2.FieldMask(paths=["realtime_enabled"]),
    )
    updated = (await catalog.UpdateLibrary(request)).library
    assert not updated.realtime_enabled and updated.sync_enabled  # nothing else moved
    listed = (await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(page_size=1000))).libraries
    assert not next(x for x in listed if x.id == lib).realtime_enabled

    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")}
    env.update(PLEXSYNC_CATALOG_ADDR=service_stack.addresses["catalog"], PLEXSYNC_CLI_TOKEN=service_stack.tokens["cli"])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "plexsync.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    on = await asyncio.to_thread(cli, "libraries", "realtime", lib, "on", "--json")
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout)["realtime_enabled"] is True
    table = await asyncio.to_thread(cli, "libraries", "list")
    assert table.returncode == 0 and "realtime" in table.stdout
    off = await asyncio.to_thread(cli, "libraries", "realtime", lib, "off")
    assert off.returncode == 0 and "off" in off.stdout
    assert not (await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=lib))).library.realtime_enabled


# ---- WriteItems -> the log -----------------------------------------------------------------------------


async def test_realtime_write_returns_its_changes_and_the_feed_delivers_them(catalog: Stub) -> None:
    lib = await new_library(catalog)
    watcher = asyncio.create_task(collect(catalog, Watch(library_id=lib), 4))
    await asyncio.sleep(0.5)  # the stream starts "from now"
    [ack] = await write(catalog, batch(lib, [movie("1"), movie("2"), movie("3")]))
    assert ack.added == 3
    assert summary(list(ack.changes)) == [("ADDED", "1"), ("ADDED", "2"), ("ADDED", "3")]
    assert {c.source for c in ack.changes} == {C.CHANGE_SOURCE_REALTIME}
    items = (await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib))).items
    assert {c.item_id for c in ack.changes} == {i.id for i in items}
    assert all(c.title.startswith("Movie") and c.state == C.ITEM_STATE_NORMAL for c in ack.changes)
    assert all(c.commit_time.seconds for c in ack.changes)
    [again] = await write(catalog, batch(lib, [movie("1"), movie("2"), movie("3", title="Renamed")]))
    assert summary(list(again.changes)) == [("UPDATED", "3")] and again.changes[0].title == "Renamed"
    fed = await watcher
    assert [c.resume_token for c in fed] == [c.resume_token for c in [*ack.changes, *again.changes]]
    assert fed[3].item_kind == C.ITEM_KIND_MOVIE and fed[3].library_id == lib and not fed[3].scan_id


async def test_a_new_etag_on_the_same_content_is_no_change(catalog: Stub) -> None:
    """A scan confirming what the real-time watcher wrote (under its own etag) stores Plex's etag, logs nothing."""
    lib = await new_library(catalog)
    [first] = await write(catalog, batch(lib, [movie("1", etag="realtime:1"), movie("2", etag="realtime:2")]))
    assert first.added == 2
    scan = str(uuid.uuid4())
    confirm = [movie("1", etag="plex-1"), movie("2", etag="plex-2", state=C.ITEM_STATE_REMOTE_ONLY)]
    [ack] = await write(catalog, batch(lib, confirm, scan_id=scan))
    assert (ack.added, ack.updated, ack.unchanged) == (0, 1, 1)  # 2's state changed; 1 only its etag
    await finish(catalog, lib, scan)
    etags = [e async for r in catalog.GetItemEtags(catalog_pb2.GetItemEtagsRequest(library_id=lib)) for e in r.etags]
    assert {e.rating_key: e.etag for e in etags} == {"1": "plex-1", "2": "plex-2"}
    watched = await collect(catalog, Watch(library_id=lib, resume_token=first.changes[-1].resume_token), 1)
    assert summary(watched) == [("UPDATED", "2")]


async def test_scan_batches_and_finish_scan_log_added_updated_missing_restored(catalog: Stub) -> None:
    lib = await new_library(catalog)
    first = str(uuid.uuid4())
    [ack] = await write(catalog, batch(lib, [movie(k) for k in "12345"], scan_id=first))
    assert ack.added == 5 and not ack.changes  # a scan's batches carry no changes on the wire
    assert (await finish(catalog, lib, first)).missing == 0
    second = str(uuid.uuid4())
    # 1 changed, 2 unchanged, 3 seen unchanged, 4 and 5 not seen: missing.
    await write(catalog, batch(lib, [movie("1", title="New"), movie("2")], scan_id=second, seen=["3"]))
    assert (await finish(catalog, lib, second)).missing == 2
    third = str(uuid.uuid4())
    # 4 comes back unchanged (seen), 5 comes back changed, 1-3 unchanged.
    back = [movie("5", title="Back"), movie("1", title="New")]
    await write(catalog, batch(lib, back, scan_id=third, seen=["2", "3", "4"]))
    await finish(catalog, lib, third)
    changes = await collect(catalog, Watch(library_id=lib, from_oldest=True), 10)
    assert len(changes) == 10  # unchanged items (2, 3, and 1 in the third scan) logged nothing
    assert summary(changes[:6]) == [*(("ADDED", k) for k in "12345"), ("UPDATED", "1")]
    assert sorted(summary(changes[6:8])) == [("MISSING", "4"), ("MISSING", "5")]
    assert summary(changes[8:]) == [("RESTORED", "5"), ("RESTORED", "4")]  # the changed item, then the seen one
    assert [c.scan_id for c in changes] == [first] * 5 + [second] * 3 + [third] * 2
    assert {c.source for c in changes} == {C.CHANGE_SOURCE_SCAN}
    assert {c.state for c in changes[6:8]} == {C.ITEM_STATE_FILE_NOT_FOUND}
    assert {c.state for c in changes[8:]} == {C.ITEM_STATE_NORMAL}


# ---- resume tokens and filters ------------------------------------------------------------------------


async def test_resume_from_a_token_delivers_exactly_the_changes_after_it(catalog: Stub) -> None:
    lib = await new_library(catalog)
    acks = await write(catalog, *(batch(lib, [movie(f"{i}a"), movie(f"{i}b")], seq=i) for i in range(5)))
    logged = [c for ack in acks for c in ack.changes]
    assert len(logged) == 10 and len({c.resume_token for c in logged}) == 10
    after = await collect(catalog, Watch(resume_token=logged[3].resume_token, library_id=lib), 6)
    assert [c.resume_token for c in after] == [c.resume_token for c in logged[4:]]
    # Unfiltered, the same token resumes at the same place (other libraries' changes may follow).
    unfiltered = await collect(catalog, Watch(resume_token=logged[3].resume_token), 6, settle=0)
    assert [c.resume_token for c in unfiltered[:6]] == [c.resume_token for c in logged[4:]]
    # From the last one: nothing until something new, then exactly that.
    waiting = asyncio.create_task(collect(catalog, Watch(resume_token=logged[-1].resume_token, library_id=lib), 1))
    await asyncio.sleep(0.3)
    [ack] = await write(catalog, batch(lib, [movie("new")]))
    assert [c.resume_token for c in await waiting] == [ack.changes[0].resume_token]


async def test_library_filter(catalog: Stub) -> None:
    one, two = await new_library(catalog), await new_library(catalog)
    await write(catalog, batch(one, [movie("x1")]), batch(two, [movie("y1"), movie("y2")]), batch(one, [movie("x2")]))
    got = await collect(catalog, Watch(library_id=one, from_oldest=True), 2)
    assert summary(got) == [("ADDED", "x1"), ("ADDED", "x2")] and {c.library_id for c in got} == {one}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(catalog, Watch(library_id="nope"), 1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["library_id"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(catalog, Watch(library_id=str(uuid.uuid4())), 1)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_made_up_and_altered_tokens_are_invalid_argument(catalog: Stub) -> None:
    lib = await new_library(catalog)
    [ack] = await write(catalog, batch(lib, [movie("t1")]))
    token = ack.changes[0].resume_token
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in ("garbage", "c1AAAAAAAAAAAQ", flipped, token[:-3], "v9" + token[2:]):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(catalog, Watch(resume_token=bad), 1)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert [f for f, _ in field_violations(err.value)] == ["resume_token"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(catalog, Watch(resume_token=token, from_oldest=True), 1)
    assert [f for f, _ in field_violations(err.value)] == ["from_oldest"]


# ---- MarkItemsMissing ----------------------------------------------------------------------------------


def _show(key: str, seasons: int, episodes: int) -> list[common_pb2.Item]:
    items = [common_pb2.Item(kind=C.ITEM_KIND_SHOW, rating_key=key, title=f"Show {key}")]
    for s in range(1, seasons + 1):
        season = f"{key}-s{s}"
        items.append(common_pb2.Item(kind=C.ITEM_KIND_SEASON, rating_key=season, parent_rating_key=key, index=s))
        items.extend(
            common_pb2.Item(kind=C.ITEM_KIND_EPISODE, rating_key=f"{season}-e{e}", parent_rating_key=season, index=e)
            for e in range(1, episodes + 1)
        )
    return items


async def test_mark_items_missing_marks_children_and_logs_them(catalog: Stub, as_scanner: Stub, db: DB) -> None:
    lib = await new_library(catalog, C.LIBRARY_KIND_SHOWS)
    await write(catalog, batch(lib, [*_show("a", 2, 2), *_show("b", 2, 1)]))
    reply = await as_scanner.MarkItemsMissing(catalog_pb2.MarkItemsMissingRequest(library_id=lib, rating_keys=["a"]))
    assert reply.missing == 7  # the show, 2 seasons, 4 episodes
    assert {c.rating_key for c in reply.changes} == {"a", "a-s1", "a-s2", "a-s1-e1", "a-s1-e2", "a-s2-e1", "a-s2-e2"}
    assert {(c.kind, c.state, c.source) for c in reply.changes} == {
        (C.CHANGE_KIND_MISSING, C.ITEM_STATE_FILE_NOT_FOUND, C.CHANGE_SOURCE_REALTIME)
    }
    rows = db.execute(
        "SELECT rating_key FROM items WHERE library_id = %s AND missing_since IS NOT NULL ORDER BY 1", (lib,)
    ).fetchall()
    assert [r[0] for r in rows] == sorted(c.rating_key for c in reply.changes)
    season = await as_scanner.MarkItemsMissing(
        catalog_pb2.MarkItemsMissingRequest(library_id=lib, rating_keys=["b-s2", "a", "unknown"])
    )
    assert season.missing == 2 and {c.rating_key for c in season.changes} == {"b-s2", "b-s2-e1"}
    fed = await collect(catalog, Watch(library_id=lib, resume_token=reply.changes[-1].resume_token), 2)
    assert [c.resume_token for c in fed] == [c.resume_token for c in season.changes]
    stats = await catalog.GetLibraryStats(catalog_pb2.GetLibraryStatsRequest(library_id=lib))
    assert sum(c.count for c in stats.counts if c.state == C.ITEM_STATE_FILE_NOT_FOUND) == 9


@pytest.mark.parametrize(
    ("library_id", "keys", "field"),
    [
        ("not-a-uuid", ["a"], "library_id"),
        ("", ["a"], "library_id"),
        (None, [], "rating_keys"),
        (None, [str(i) for i in range(1001)], "rating_keys"),
        (None, ["a", ""], "rating_keys[1]"),
        (None, ["x" * 300], "rating_keys[0]"),
    ],
)
async def test_mark_items_missing_validates(
    as_scanner: Stub, catalog: Stub, library_id: str | None, keys: list[str], field: str
) -> None:
    lib = await new_library(catalog) if library_id is None else library_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await as_scanner.MarkItemsMissing(catalog_pb2.MarkItemsMissingRequest(library_id=lib, rating_keys=keys))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == [field]


async def test_mark_items_missing_needs_the_scanner_and_a_library(
    catalog: Stub, as_scanner: Stub, service_stack: ServiceStack
) -> None:
    lib = await new_library(catalog)
    async with service_stack.channel("catalog", "cli") as admin_channel:  # an admin is no scanner
        admin = catalog_pb2_grpc.CatalogServiceStub(admin_channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.MarkItemsMissing(catalog_pb2.MarkItemsMissingRequest(library_id=lib, rating_keys=["a"]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await as_scanner.MarkItemsMissing(
            catalog_pb2.MarkItemsMissingRequest(library_id=str(uuid.uuid4()), rating_keys=["a"])
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# ---- ordering ------------------------------------------------------------------------------------------


async def test_concurrent_writers_changes_are_delivered_in_commit_order_without_gaps(catalog: Stub, db: DB) -> None:
    libraries = [await new_library(catalog) for _ in range(6)]
    [marker] = await write(catalog, batch(libraries[0], [movie("marker")]))
    start = marker.changes[0].resume_token
    streams, batches, size = len(libraries), 8, 40
    total = streams * batches * size
    reader = asyncio.create_task(collect(catalog, Watch(resume_token=start), total, within=120, settle=1.0))

    async def writer(n: int, lib: str) -> None:
        scan = str(uuid.uuid4()) if n % 2 else ""  # half scans, half real-time writers
        requests = [
            batch(lib, [movie(f"{n}-{b}-{i}") for i in range(size)], scan_id=scan, seq=b) for b in range(batches)
        ]
        await write(catalog, *requests)

    await asyncio.gather(*(writer(n, lib) for n, lib in enumerate(libraries)))
    got = await reader
    keys = [c.rating_key for c in got]
    assert len(keys) == total and len(set(keys)) == total  # nothing twice, nothing missed
    logged = db.execute(
        "SELECT rating_key FROM item_changes WHERE seq > (SELECT seq FROM item_changes WHERE library_id = %s "
        "AND rating_key = 'marker') ORDER BY seq",
        (libraries[0],),
    ).fetchall()
    assert keys == [r[0] for r in logged]  # the log, in its order
