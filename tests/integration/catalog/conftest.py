"""A real catalog process per test module, a stub to call it and a direct database connection to inspect rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from plexsync.common.db import libpq_url
from plexsync.v1 import catalog_pb2_grpc

from tests.support.stack import ServiceStack


@pytest.fixture(scope="module")
async def catalog(service_stack: ServiceStack) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceStub]:
    # Every batch may be pipelined, however small: the tests' streams check the pipeline's outcomes.
    service_stack.start("catalog", PLEXSYNC_CATALOG_ETAG_CHUNK="100", PLEXSYNC_CATALOG_PIPELINE_MIN_ITEMS="1")
    channel = service_stack.channel("catalog")
    try:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)
    finally:
        await channel.close()


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(libpq_url(database_url), autocommit=True, options="-c search_path=catalog") as conn:
        yield conn
