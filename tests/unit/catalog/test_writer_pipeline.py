"""Which batches of a WriteItems stream may start while earlier ones are being written; people sent to the worker."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from typing import cast

from plexsync.catalog import ingest
from plexsync.catalog.store import Store
from plexsync.catalog.writer import BatchResult, PeopleCache, Prepared, Turn, Writer, _InFlight
from plexsync.v1 import catalog_pb2

from tests.integration.catalog.helpers import movie

LIB = uuid.uuid4()


def prepared(keys: list[str], seen: tuple[str, ...] = ()) -> Prepared:
    request = catalog_pb2.WriteItemsRequest(
        library_id=str(LIB), items=[movie(k) for k in keys], seen_rating_keys=list(seen)
    )
    return Prepared(request, LIB, None, ingest.prepare_batch(request, 10_000), [])


async def test_only_big_enough_batches_with_keys_of_their_own_are_pipelined() -> None:
    writer = Writer(cast(Store, None), pipeline=2, pipeline_min_items=3)
    running = cast("asyncio.Task[BatchResult]", asyncio.get_running_loop().create_future())
    in_flight = deque([_InFlight(prepared(["1", "2", "3"]), running, Turn())])
    assert writer._may_pipeline(prepared(["4", "5", "6"]), in_flight)
    assert not writer._may_pipeline(prepared(["4", "5"]), in_flight)  # too small
    assert not writer._may_pipeline(prepared(["4", "5", "3"]), in_flight)  # shares an item with the one in flight
    assert not writer._may_pipeline(prepared(["4", "5", "6"], seen=("1",)), in_flight)  # ... or a seen key
    in_flight.append(in_flight[0])
    assert not writer._may_pipeline(prepared(["7", "8", "9"]), in_flight)  # no room
    running.cancel()


def test_people_cache_hands_committed_people_to_the_worker_once() -> None:
    cache = PeopleCache(limit=4)
    cache.merge({("A", 1): 10, ("B", 2): 11})
    assert cache.take_unsent() == [("A", 1, 10), ("B", 2, 11)] and cache.take_unsent() == []
    cache.merge({("C", 3): 12})
    cache.resend_all()  # a new worker: everybody again
    assert sorted(cache.take_unsent()) == [("A", 1, 10), ("B", 2, 11), ("C", 3, 12)]
    cache.merge({("D", 4): 13, ("E", 5): 14})  # over the limit: both start again
    assert cache.ids == {("D", 4): 13, ("E", 5): 14} and cache.take_unsent() == [("D", 4, 13), ("E", 5, 14)]
    alone = PeopleCache(for_worker=False)  # no worker: nothing kept to send
    alone.merge({("A", 1): 10})
    alone.resend_all()
    assert alone.ids == {("A", 1): 10} and alone.take_unsent() == []
