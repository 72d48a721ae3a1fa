"""WriteItems with several transactions of one stream open at once, and with concurrent writers of a library.

The catalog pipelines a stream's batches (see `Writer.write_stream`); these tests check that the outcome is
still that of one batch after the other, and that a writer getting in the way never corrupts a batch.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from plexsync.catalog.writer import lock_key
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

from tests.integration.catalog.helpers import C, batch, movie, new_library, other_writer, write

Stub = catalog_pb2_grpc.CatalogServiceStub
DB = psycopg.Connection[Any]


async def items_by_key(stub: Stub, library_id: str) -> dict[str, common_pb2.Item]:
    reply = await stub.ListItems(catalog_pb2.ListItemsRequest(library_id=library_id, page_size=1000))
    return {i.rating_key: i for i in reply.items}


def episode(key: str, parent: str, title: str = "") -> common_pb2.Item:
    return common_pb2.Item(kind=C.ITEM_KIND_EPISODE, rating_key=key, parent_rating_key=parent, title=title or key)


async def test_pipelined_batches_give_the_result_of_one_after_the_other(catalog: Stub) -> None:
    lib = await new_library(catalog, C.LIBRARY_KIND_SHOWS)
    show = common_pb2.Item(kind=C.ITEM_KIND_SHOW, rating_key="s1", title="Show")
    season = common_pb2.Item(kind=C.ITEM_KIND_SEASON, rating_key="s1-1", parent_rating_key="s1", index=1)
    filler = [episode(f"f{i}", "s1-1") for i in range(60)]
    acks = await write(
        catalog,
        batch(lib, [show, episode("e1", "s1-1"), *filler[:30]], seq=1),  # e1 waits for its season
        batch(lib, [season, episode("e2", "s1-1"), *filler[30:]], seq=2),  # the season arrives: e1 is adopted
        batch(lib, [episode("e2", "s1-1", title="E2 renamed")], seq=3),  # e2 again: waits for batch 2
        batch(lib, [episode("e3", "s1-1")], seq=4, seen=["e1", "f0"]),
    )
    assert [(a.sequence, a.added, a.updated, a.unchanged) for a in acks] == [
        (1, 32, 0, 0),
        (2, 32, 0, 0),
        (3, 0, 1, 0),
        (4, 1, 0, 2),
    ]
    items = await items_by_key(catalog, lib)
    assert len(items) == 65
    assert items["s1-1"].parent_id == items["s1"].id
    assert {items[k].parent_id for k in ("e1", "e2", "e3", "f0", "f59")} == {items["s1-1"].id}
    assert items["e2"].title == "E2 renamed"


async def test_a_client_that_waits_for_each_acknowledgement(catalog: Stub) -> None:
    """Batches sent one at a time, each after the previous one's ack, are all written (no batch waits for a
    request that will only come after its own ack)."""
    lib = await new_library(catalog)
    acked: asyncio.Queue[int] = asyncio.Queue()

    async def lockstep() -> AsyncIterator[catalog_pb2.WriteItemsRequest]:
        for seq in range(1, 6):
            yield batch(lib, [movie(str(seq * 100 + i)) for i in range(60)], seq=seq)
            assert await acked.get() == seq

    async def run() -> list[int]:
        seqs = []
        async for ack in catalog.WriteItems(lockstep()):
            seqs.append(ack.sequence)
            acked.put_nowait(ack.sequence)
        return seqs

    assert await asyncio.wait_for(run(), timeout=60) == [1, 2, 3, 4, 5]
    assert len(await items_by_key(catalog, lib)) == 300


async def test_a_key_inserted_concurrently_is_written_again_as_an_update(
    catalog: Stub, db: DB, database_url: str
) -> None:
    """Another writer inserts a rating key while the batch is writing it as new: the batch's COPY waits for
    that writer, fails on the key, and the batch is written again, now as an update of that row."""
    lib = await new_library(catalog)
    with other_writer(database_url, lib, holding="race") as other:
        call = asyncio.ensure_future(write(catalog, batch(lib, [movie("race", title="Mine"), movie("calm")], seq=1)))
        deadline = time.monotonic() + 30
        while not db.execute(  # the catalog's COPY waits for the uncommitted row
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'plexsync-catalog' AND wait_event_type = 'Lock'"
        ).fetchone():
            assert time.monotonic() < deadline and not call.done(), "the batch never waited for the other writer"
            await asyncio.sleep(0.05)
        other.commit()
        acks = await asyncio.wait_for(call, timeout=60)
    assert [(a.added, a.updated, a.unchanged) for a in acks] == [(1, 1, 0)]
    items = await items_by_key(catalog, lib)
    assert items["race"].title == "Mine" and len(items) == 2
    (streams,) = db.execute(
        "SELECT count(*) FROM media_streams s JOIN items i ON i.id = s.item_id WHERE i.rating_key = 'race' "
        "AND i.library_id = %s",
        (lib,),
    ).fetchone() or (0,)
    assert streams == 3


@pytest.mark.parametrize("round_", range(3))
async def test_streams_writing_the_same_items_at_once(catalog: Stub, db: DB, round_: int) -> None:
    """Three scans of one library at the same time (a misuse, but it happens; their batches conflict and are
    rolled back and written again, timing decides which): every stream succeeds, every item is stored once
    with all its rows, and each item counts as added by exactly one stream. Three rounds, as the interleaving
    differs from run to run."""
    lib = await new_library(catalog)
    keys = [str(5000 + i) for i in range(600)]

    async def scan(delay: float) -> list[catalog_pb2.WriteItemsResponse]:
        await asyncio.sleep(delay)
        scan_id = str(uuid.uuid4())
        return await write(
            catalog,
            *(
                batch(lib, [movie(k) for k in keys[i : i + 100]], seq=i // 100, scan_id=scan_id)
                for i in range(0, 600, 100)
            ),
        )

    results = await asyncio.wait_for(asyncio.gather(scan(0), scan(0.05), scan(0.15)), timeout=120)
    for acks in results:
        assert sum(a.added + a.updated + a.unchanged for a in acks) == 600
    assert sum(a.added for acks in results for a in acks) == 600
    rows = db.execute(
        "SELECT count(*), count(DISTINCT i.rating_key), "
        "(SELECT count(*) FROM media_streams s JOIN items j ON j.id = s.item_id WHERE j.library_id = %s), "
        "(SELECT count(*) FROM credits c JOIN items j ON j.id = c.item_id WHERE j.library_id = %s) "
        "FROM items i WHERE i.library_id = %s",
        (lib, lib, lib),
    ).fetchone()
    assert rows == (600, 600, 600 * 3, 600 * 3)


async def test_an_item_marked_missing_while_its_batch_waited_comes_back(
    catalog: Stub, db: DB, database_url: str
) -> None:
    """Another scan's FinishScan marks an item missing after a pipelined batch classified it as unchanged and
    before that batch committed: the batch brings it back, as it would had it run after that FinishScan."""
    lib = await new_library(catalog)
    await write(catalog, batch(lib, [movie("kept")], seq=1))
    with other_writer(database_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(uuid.UUID(lib)),))  # the library is busy
        call = asyncio.ensure_future(
            write(catalog, batch(lib, [movie("new")], seq=1), batch(lib, [movie("kept")], seq=2))
        )
        deadline = time.monotonic() + 30
        while True:  # batch 1 waits for the lock; batch 2 has classified "kept" and waits for batch 1
            states = db.execute(
                "SELECT state, wait_event_type, query FROM pg_stat_activity WHERE application_name = 'plexsync-catalog'"
            ).fetchall()
            if any(w == "Lock" and "advisory" in q for _, w, q in states) and any(
                s == "idle in transaction" and "content_hash" in q for s, _, q in states
            ):
                break
            assert time.monotonic() < deadline and not call.done(), states
            await asyncio.sleep(0.05)
        other.execute("UPDATE items SET missing_since = now() WHERE library_id = %s AND rating_key = 'kept'", (lib,))
        other.commit()  # what another scan's FinishScan would have done, under the lock
        acks = await asyncio.wait_for(call, timeout=60)
    assert [(a.sequence, a.added, a.unchanged, a.restored) for a in acks] == [(1, 1, 0, 0), (2, 0, 0, 1)]
    (missing,) = db.execute(
        "SELECT missing_since FROM items WHERE library_id = %s AND rating_key = 'kept'", (lib,)
    ).fetchone() or (0,)
    assert missing is None


async def test_credits_of_people_the_worker_knows_are_written_right(catalog: Stub) -> None:
    """The worker completes the credit lines of people committed earlier (sent to it by the writer), the
    writer those of new people; either way every credit names its person, role, order and character."""
    lib = await new_library(catalog)
    first = [movie(str(n), credits=4) for n in range(1, 61)]  # Person 0-3: inserted by this stream
    await write(catalog, batch(lib, first, seq=1))
    later = [movie(str(n), credits=6) for n in range(61, 181)]  # Person 0-3 known to the worker, 4-5 new
    for m in later[60:]:
        m.credits.add(role=C.CREDIT_ROLE_WRITER, name="Zoë Writer", order=9, plex_tag_id=77)
    acks = await write(catalog, batch(lib, later[:60], seq=1), batch(lib, later[60:], seq=2))
    assert [a.added for a in acks] == [60, 60]
    items = await items_by_key(catalog, lib)
    for key, count in (("1", 4), ("61", 6), ("150", 7)):
        full = (await catalog.GetItem(catalog_pb2.GetItemRequest(item_id=items[key].id))).item
        got = sorted((c.name, c.role, c.order, c.character, c.plex_tag_id) for c in full.credits)
        sent = next(m for m in (*first, *later) if m.rating_key == key)
        assert len(got) == count
        assert got == sorted((c.name, c.role, c.order, c.character, c.plex_tag_id) for c in sent.credits)
