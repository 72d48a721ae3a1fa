"""Change-log retention and WatchChanges at shutdown, on a catalog of its own that keeps changes ~2 seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc

from tests.integration.catalog.changefeed import collect
from tests.integration.catalog.helpers import batch, movie, new_library, write
from tests.support.stack import ServiceStack

Stub = catalog_pb2_grpc.CatalogServiceStub
DB = psycopg.Connection[Any]
Watch = catalog_pb2.WatchChangesRequest


@pytest.fixture(scope="module")
async def catalog(service_stack: ServiceStack) -> AsyncIterator[Stub]:
    service_stack.start(
        "catalog", PLEXSYNC_CATALOG_CHANGES_RETENTION_HOURS=str(2 / 3600), PLEXSYNC_CATALOG_CHANGES_PRUNE_SECONDS="0.5"
    )
    channel = service_stack.channel("catalog")
    try:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)
    finally:
        await channel.close()


async def test_a_token_older_than_the_log_has_expired(catalog: Stub, db: DB) -> None:
    lib = await new_library(catalog)
    [first, last] = await write(catalog, batch(lib, [movie("1")], seq=1), batch(lib, [movie("2")], seq=2))
    deadline = time.monotonic() + 30
    while db.execute("SELECT count(*) FROM item_changes").fetchone() != (0,):
        assert time.monotonic() < deadline, "the change log was not pruned"
        await asyncio.sleep(0.2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(catalog, Watch(resume_token=first.changes[0].resume_token), 1)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "resume token expired" in (err.value.details() or "")
    # The newest pruned change's token still resumes: nothing after it was lost.
    waiting = asyncio.create_task(collect(catalog, Watch(resume_token=last.changes[0].resume_token), 1))
    await asyncio.sleep(0.3)
    [ack] = await write(catalog, batch(lib, [movie("3")]))
    assert [c.resume_token for c in await waiting] == [ack.changes[0].resume_token]


async def test_streams_end_cleanly_at_shutdown(catalog: Stub, service_stack: ServiceStack) -> None:
    call = catalog.WatchChanges(Watch())
    reading = asyncio.create_task(call.read())
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await asyncio.to_thread(service_stack.children[-1].stop)
    assert await reading == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert time.monotonic() - started < 2.5  # not held until the 3 s drain deadline
