"""WriteItems, GetItemEtags and FinishScan against a real catalog process and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import text_format
from plexsync.common.grpc_errors import field_violations
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

from tests.integration.catalog.helpers import C, batch, movie, new_library, write

Stub = catalog_pb2_grpc.CatalogServiceStub
DB = psycopg.Connection[Any]


def xmins(db: DB, table: str, item_id: str) -> dict[Any, str]:
    """xmin of every row of `table` belonging to the item, keyed by the row's primary key."""
    if table == "items":
        return {r[0]: r[1] for r in db.execute("SELECT id, xmin::text FROM items WHERE id = %s", (item_id,))}
    rows = db.execute(f"SELECT *, xmin::text FROM {table} WHERE item_id = %s", (item_id,)).fetchall()
    return {r[:-1]: r[-1] for r in rows}


async def get(stub: Stub, item_id: str) -> common_pb2.Item:
    reply: catalog_pb2.GetItemResponse = await stub.GetItem(catalog_pb2.GetItemRequest(item_id=item_id))
    return reply.item


async def item_id_of(stub: Stub, library_id: str, key: str) -> str:
    items = (await stub.ListItems(catalog_pb2.ListItemsRequest(library_id=library_id, page_size=1000))).items
    return str(next(i.id for i in items if i.rating_key == key))


def strip_output(item: common_pb2.Item) -> common_pb2.Item:
    copy = common_pb2.Item()
    copy.CopyFrom(item)
    for name in ("id", "library_id", "parent_id", "first_seen_at", "last_seen_at", "update_time"):
        copy.ClearField(name)
    return copy


async def test_write_and_read_back_everything(catalog: Stub) -> None:
    lib = await new_library(catalog)
    original = movie("101", title="The Matrix", credits=4, genres=["Action", "Sci-Fi"], versions=2)
    [ack] = await write(catalog, batch(lib, [original], seq=7))
    assert (ack.sequence, ack.added, ack.updated, ack.unchanged, ack.restored) == (7, 1, 0, 0, 0)
    item_id = await item_id_of(catalog, lib, "101")
    stored = await get(catalog, item_id)
    assert uuid.UUID(stored.id) and stored.library_id == lib
    assert stored.first_seen_at.seconds > 0 and stored.update_time.seconds > 0
    got = strip_output(stored)
    assert sorted(got.credits, key=lambda c: (c.role, c.order)) == sorted(
        original.credits, key=lambda c: (c.role, c.order)
    )
    assert got.guids[1].provider == "tmdb" and got.guids[1].external_id == "101"  # derived from the URI
    for message in (got, original):
        message.ClearField("credits")
        message.guids[1].provider = message.guids[1].external_id = ""
    assert text_format.MessageToString(got) == text_format.MessageToString(original)


async def test_same_batch_twice_is_unchanged_and_writes_nothing(catalog: Stub, db: DB) -> None:
    lib = await new_library(catalog)
    items = [movie(str(200 + i)) for i in range(5)]
    [first] = await write(catalog, batch(lib, items))
    assert first.added == 5
    item_id = await item_id_of(catalog, lib, "200")
    tables = ["items", "credits", "media_versions", "media_parts", "media_streams", "chapters"]
    before = {t: xmins(db, t, item_id) for t in tables}
    before_item = await get(catalog, item_id)
    [second] = await write(catalog, batch(lib, items))
    assert (second.added, second.updated, second.unchanged, second.restored) == (0, 0, 5, 0)
    assert {t: xmins(db, t, item_id) for t in tables} == before
    after_item = await get(catalog, item_id)
    assert after_item.update_time == before_item.update_time
    assert strip_output(after_item) == strip_output(before_item)


async def test_relationship_diffs_touch_only_what_changed(catalog: Stub, db: DB) -> None:
    lib = await new_library(catalog)
    original = movie("300", credits=4, genres=["Action", "Drama"], versions=2)
    await write(catalog, batch(lib, [original]))
    item_id = await item_id_of(catalog, lib, "300")
    chapters_before = xmins(db, "chapters", item_id)
    credits_before = xmins(db, "credits", item_id)
    streams_before = xmins(db, "media_streams", item_id)

    changed = movie("300", credits=4, genres=["Action", "Drama"], versions=2)
    del changed.credits[3]  # remove an actor
    changed.credits.add(role=C.CREDIT_ROLE_WRITER, name="New Writer", order=0)  # add a writer
    changed.genres.remove("Drama")
    changed.genres.append("Thriller")
    del changed.media[1]  # drop the second version (cascades to its parts and streams)
    changed.media[0].parts[0].streams[2].language = "Deutsch"  # change one stream
    del changed.media[0].parts[0].streams[1]  # drop one stream
    changed.media[0].parts[0].streams.add(plex_stream_id=999_999, kind=C.STREAM_KIND_AUDIO, codec="aac")
    [ack] = await write(catalog, batch(lib, [changed]))
    assert (ack.added, ack.updated, ack.unchanged) == (0, 1, 0)

    stored = await get(catalog, item_id)
    assert stored.id == item_id
    assert sorted((c.role, c.name) for c in stored.credits) == sorted((c.role, c.name) for c in changed.credits)
    assert sorted(stored.genres) == ["Action", "Thriller"]
    assert [m.plex_media_id for m in stored.media] == [changed.media[0].plex_media_id]
    streams = stored.media[0].parts[0].streams
    assert {s.plex_stream_id: s.language for s in streams} == {
        s.plex_stream_id: s.language for s in changed.media[0].parts[0].streams
    }

    # Untouched relationship rows keep their tuples.
    assert xmins(db, "chapters", item_id) == chapters_before
    credits_after = xmins(db, "credits", item_id)
    kept = set(credits_before) & set(credits_after)
    assert len(kept) == 3 and all(credits_after[k] == credits_before[k] for k in kept)
    streams_after = xmins(db, "media_streams", item_id)
    untouched = [
        k for k in streams_after if k in streams_before and k[3] == changed.media[0].parts[0].streams[0].plex_stream_id
    ]
    assert untouched and all(streams_after[k] == streams_before[k] for k in untouched)
    assert db.execute("SELECT count(*) FROM media_parts WHERE item_id = %s", (item_id,)).fetchone() == (1,)


async def test_people_are_shared_across_items(catalog: Stub, db: DB) -> None:
    lib = await new_library(catalog)
    await write(catalog, batch(lib, [movie("401", credits=3), movie("402", credits=3)]))
    rows = db.execute(
        "SELECT p.name, count(*) FROM credits c JOIN people p ON p.id = c.person_id JOIN items i ON i.id = c.item_id "
        "WHERE i.library_id = %s GROUP BY p.name ORDER BY p.name",
        (lib,),
    ).fetchall()
    assert rows == [("Person 0", 2), ("Person 1", 2), ("Person 2", 2)]


async def test_parents_resolved_in_same_and_later_batches(catalog: Stub) -> None:
    lib = await new_library(catalog, C.LIBRARY_KIND_SHOWS)
    show = common_pb2.Item(kind=C.ITEM_KIND_SHOW, rating_key="s1", title="Show", networks=["HBO"])
    season = common_pb2.Item(kind=C.ITEM_KIND_SEASON, rating_key="s1-1", parent_rating_key="s1", index=1)
    episode = common_pb2.Item(kind=C.ITEM_KIND_EPISODE, rating_key="e1", parent_rating_key="s1-1", index=1)
    # Episode first, alone; then show and season together (parent listed before child).
    await write(catalog, batch(lib, [episode], seq=1), batch(lib, [show, season], seq=2))
    items = {i.rating_key: i for i in (await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib))).items}
    assert items["s1-1"].parent_id == items["s1"].id
    assert items["e1"].parent_id == items["s1-1"].id
    children = await catalog.ListItems(catalog_pb2.ListItemsRequest(parent_id=items["s1"].id))
    assert [i.rating_key for i in children.items] == ["s1-1"]
    networks = await catalog.ListNetworks(catalog_pb2.ListNetworksRequest(library_id=lib))
    assert [(n.name, n.show_count) for n in networks.networks] == [("HBO", 1)]


async def test_bad_item_rejects_whole_batch(catalog: Stub, db: DB) -> None:
    lib = await new_library(catalog)
    good = [movie(str(500 + i)) for i in range(3)]
    bad = movie("503")
    bad.media[0].parts[0].size_bytes = -1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await write(catalog, batch(lib, [*good, bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["items[3].media[0].parts[0].size_bytes"]
    assert db.execute("SELECT count(*) FROM items WHERE library_id = %s", (lib,)).fetchone() == (0,)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda i: setattr(i, "rating_key", ""), "items[1].rating_key"),
        (lambda i: setattr(i, "kind", 42), "items[1].kind"),
        (lambda i: setattr(i, "state", 9), "items[1].state"),
        (lambda i: setattr(i, "title", "x" * 5000), "items[1].title"),
        (lambda i: setattr(i, "year", -5), "items[1].year"),
        (lambda i: setattr(i, "release_date", "31/03/1999"), "items[1].release_date"),
        (lambda i: i.credits[0].ClearField("name"), "items[1].credits[0].name"),
        (lambda i: setattr(i.media[0].parts[0].streams[0], "kind", 0), "items[1].media[0].parts[0].streams[0].kind"),
        (lambda i: i.media.add().CopyFrom(i.media[0]), "items[1].media[1].plex_media_id"),
    ],
)
async def test_invalid_fields_are_named(catalog: Stub, mutate: Any, field: str) -> None:
    lib = await new_library(catalog)
    bad = movie("602")
    mutate(bad)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await write(catalog, batch(lib, [movie("601"), bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in field_violations(err.value)]


async def test_request_level_errors(catalog: Stub) -> None:
    lib = await new_library(catalog)
    cases = [
        (batch("not-a-uuid", [movie("1")]), grpc.StatusCode.INVALID_ARGUMENT, "library_id"),
        (batch(str(uuid.uuid4()), [movie("1")]), grpc.StatusCode.NOT_FOUND, None),
        (batch(lib, [movie("1")], scan_id="nope"), grpc.StatusCode.INVALID_ARGUMENT, "scan_id"),
        (batch(lib, [movie("1"), movie("1")]), grpc.StatusCode.INVALID_ARGUMENT, "items[1].rating_key"),
        (batch(lib, [], seen=[""]), grpc.StatusCode.INVALID_ARGUMENT, "seen_rating_keys[0]"),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await write(catalog, request)
        assert err.value.code() == code, request
        if field:
            assert field in [f for f, _ in field_violations(err.value)]


async def test_scan_lifecycle_missing_and_restore(catalog: Stub) -> None:
    lib = await new_library(catalog)
    scan1 = str(uuid.uuid4())
    items = [movie(str(700 + i)) for i in range(4)]
    col = common_pb2.Collection(rating_key="c1", title="Trilogy", member_rating_keys=["700", "701"])
    await write(catalog, batch(lib, items, scan_id=scan1, collections=[col]))
    done = await catalog.FinishScan(catalog_pb2.FinishScanRequest(library_id=lib, scan_id=scan1, mode=C.SCAN_MODE_DEEP))
    assert (done.missing, done.present, done.collections_removed) == (0, 4, 0)
    ids = {i.rating_key: i.id for i in (await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib))).items}

    # Scan 2: 700 rewritten (changed), 701 seen unchanged, 702 and 703 and the collection gone.
    scan2 = str(uuid.uuid4())
    changed = movie("700", title="Changed")
    await write(catalog, batch(lib, [changed], scan_id=scan2, seen=["701"]))
    done = await catalog.FinishScan(
        catalog_pb2.FinishScanRequest(library_id=lib, scan_id=scan2, mode=C.SCAN_MODE_INCREMENTAL)
    )
    assert (done.missing, done.present, done.collections_removed) == (2, 2, 1)
    again = await catalog.FinishScan(catalog_pb2.FinishScanRequest(library_id=lib, scan_id=scan2))
    assert (again.missing, again.present) == (2, 2)  # a retried FinishScan changes nothing
    gone = await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib, state=C.ITEM_STATE_FILE_NOT_FOUND))
    assert sorted(i.rating_key for i in gone.items) == ["702", "703"]
    assert (await get(catalog, ids["702"])).title == "Movie 702"  # metadata kept
    etags = [e async for r in catalog.GetItemEtags(catalog_pb2.GetItemEtagsRequest(library_id=lib)) for e in r.etags]
    assert {e.rating_key: e.state for e in etags}["703"] == C.ITEM_STATE_FILE_NOT_FOUND
    assert not (await catalog.ListCollections(catalog_pb2.ListCollectionsRequest(library_id=lib))).collections

    # Scan 3: 702 comes back unchanged as REMOTE_ONLY (written), 703 comes back as a seen key.
    scan3 = str(uuid.uuid4())
    back = movie("702", state=C.ITEM_STATE_REMOTE_ONLY)
    [ack] = await write(catalog, batch(lib, [back], scan_id=scan3, seen=["700", "701", "703"]))
    assert (ack.added, ack.updated, ack.unchanged, ack.restored) == (0, 0, 2, 2)
    done = await catalog.FinishScan(catalog_pb2.FinishScanRequest(library_id=lib, scan_id=scan3))
    assert (done.missing, done.present) == (0, 4)
    restored = await get(catalog, ids["702"])
    assert restored.id == ids["702"] and restored.state == C.ITEM_STATE_REMOTE_ONLY
    assert (await get(catalog, ids["703"])).state == C.ITEM_STATE_NORMAL

    # Writing into a finished scan is refused.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await write(catalog, batch(lib, [back], scan_id=scan3))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stats = await catalog.GetLibraryStats(catalog_pb2.GetLibraryStatsRequest(library_id=lib))
    assert stats.total == 4 and stats.last_scan_time.seconds > 0
    library = (await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=lib))).library
    assert library.last_deep_scan_time.seconds > 0


async def test_item_etags_stream_in_chunks(catalog: Stub) -> None:
    lib = await new_library(catalog)
    items = [common_pb2.Item(kind=C.ITEM_KIND_MOVIE, rating_key=f"k{i:04d}", etag=f"e{i}") for i in range(250)]
    await write(catalog, batch(lib, items))
    chunks = [r async for r in catalog.GetItemEtags(catalog_pb2.GetItemEtagsRequest(library_id=lib))]
    assert [len(c.etags) for c in chunks] == [100, 100, 50]  # PLEXSYNC_CATALOG_ETAG_CHUNK=100
    got = {e.rating_key: (e.etag, e.kind, e.state) for c in chunks for e in c.etags}
    assert got["k0042"] == ("e42", C.ITEM_KIND_MOVIE, C.ITEM_STATE_NORMAL) and len(got) == 250
    shows = [
        r async for r in catalog.GetItemEtags(catalog_pb2.GetItemEtagsRequest(library_id=lib, kinds=[C.ITEM_KIND_SHOW]))
    ]
    assert sum(len(c.etags) for c in shows) == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in catalog.GetItemEtags(catalog_pb2.GetItemEtagsRequest(library_id=str(uuid.uuid4())))]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def write_until_error(
    catalog: Stub, requests: list[catalog_pb2.WriteItemsRequest]
) -> tuple[list[int], grpc.aio.AioRpcError]:
    """Stream `requests` through WriteItems, which must fail: (acknowledged sequences, the error)."""
    acks: list[int] = []

    async def gen() -> Any:
        for r in requests:
            yield r

    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for ack in catalog.WriteItems(gen()):
            acks.append(ack.sequence)
    return acks, err.value


async def test_stream_stops_at_the_bad_batch(catalog: Stub, db: DB) -> None:
    lib = await new_library(catalog)
    bad = movie("b1")
    bad.chapters.add(index=0)  # duplicate chapter index
    requests = [
        batch(lib, [movie(str(800 + i)) for i in range(50)], seq=1),
        batch(lib, [movie(str(900 + i)) for i in range(50)], seq=2),
        batch(lib, [movie("b0"), bad], seq=3),
        batch(lib, [movie("after")], seq=4),
    ]
    acks, err = await write_until_error(catalog, requests)
    assert acks == [1, 2]
    assert [f for f, _ in field_violations(err)] == ["items[1].chapters[1].index"]
    keys = {r[0] for r in db.execute("SELECT rating_key FROM items WHERE library_id = %s", (lib,))}
    assert len(keys) == 100 and "b0" not in keys and "after" not in keys


async def test_batches_before_a_malformed_request_are_written(catalog: Stub, db: DB) -> None:
    """A request-level error (here a rating key twice in one batch) found while that batch was read ahead
    still lets every batch before it be written and acknowledged, and nothing after it."""
    lib = await new_library(catalog)
    requests = [
        batch(lib, [movie(str(700 + i)) for i in range(60)], seq=1),
        batch(lib, [movie(str(760 + i)) for i in range(60)], seq=2),
        batch(lib, [movie("d0"), movie("d0")], seq=3),
        batch(lib, [movie("later")], seq=4),
    ]
    acks, err = await write_until_error(catalog, requests)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert acks == [1, 2]
    assert [f for f, _ in field_violations(err)] == ["items[1].rating_key"]
    keys = {r[0] for r in db.execute("SELECT rating_key FROM items WHERE library_id = %s", (lib,))}
    assert len(keys) == 120 and "d0" not in keys and "later" not in keys
