"""WriteItems against another writer that holds a row for longer than the catalog's row-lock timeout.

Its own catalog process, started with a short `PLEXSYNC_CATALOG_ROW_LOCK_TIMEOUT_MS`, so waiting out the
timeout three times takes about a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest
from plexsync.v1 import catalog_pb2_grpc

from tests.integration.catalog.helpers import batch, movie, new_library, other_writer, write
from tests.support.stack import ServiceStack

Stub = catalog_pb2_grpc.CatalogServiceStub
DB = psycopg.Connection[Any]
TIMEOUT_MS = 300


@pytest.fixture(scope="module")
async def catalog(service_stack: ServiceStack) -> AsyncIterator[Stub]:
    service_stack.start(
        "catalog", PLEXSYNC_CATALOG_ROW_LOCK_TIMEOUT_MS=str(TIMEOUT_MS), PLEXSYNC_CATALOG_PIPELINE_MIN_ITEMS="1"
    )
    channel = service_stack.channel("catalog")
    try:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)
    finally:
        await channel.close()


def keys_of(db: DB, library_id: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT rating_key FROM items WHERE library_id = %s", (library_id,))}


async def test_a_row_held_past_every_retry_aborts_the_batch_and_writes_nothing(
    catalog: Stub, db: DB, database_url: str
) -> None:
    lib = await new_library(catalog)
    with other_writer(database_url, lib, holding="held") as other:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(write(catalog, batch(lib, [movie("free"), movie("held")], seq=1)), timeout=60)
        waited = time.monotonic() - started
        other.rollback()
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "conflicted 3 times" in (err.value.details() or "")
    assert waited >= 3 * TIMEOUT_MS / 1000  # each try waited out the timeout
    assert keys_of(db, lib) == set()  # nothing of the batch, not even the item nobody else held


async def test_a_row_released_during_the_retries_is_written_as_an_update(
    catalog: Stub, db: DB, database_url: str
) -> None:
    lib = await new_library(catalog)
    with other_writer(database_url, lib, holding="held") as other:
        call = asyncio.ensure_future(write(catalog, batch(lib, [movie("free"), movie("held", title="Mine")], seq=1)))
        await asyncio.sleep(TIMEOUT_MS / 1000 * 1.5)  # the first try has timed out; the second one waits
        other.commit()
        acks = await asyncio.wait_for(call, timeout=60)
    assert [(a.added, a.updated, a.unchanged) for a in acks] == [(1, 1, 0)]
    assert keys_of(db, lib) == {"free", "held"}
    (title,) = db.execute(
        "SELECT title FROM items WHERE library_id = %s AND rating_key = 'held'", (lib,)
    ).fetchone() or ("",)
    assert title == "Mine"
