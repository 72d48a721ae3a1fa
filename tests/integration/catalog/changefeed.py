"""Helpers of the change-feed tests: reading WatchChanges until enough changes arrived."""

from __future__ import annotations

import asyncio
import contextlib

from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

Stub = catalog_pb2_grpc.CatalogServiceStub


async def collect(
    stub: Stub, request: catalog_pb2.WatchChangesRequest, count: int, *, within: float = 20, settle: float = 0.5
) -> list[common_pb2.ItemChange]:
    """The first `count` changes the stream sends, and whatever else arrives within `settle` seconds after."""
    call = stub.WatchChanges(request)
    got: list[common_pb2.ItemChange] = []

    async def read() -> None:
        async for reply in call:
            got.extend(reply.changes)
            if len(got) >= count:
                return

    try:
        await asyncio.wait_for(read(), within)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read(), settle)
    finally:
        call.cancel()
    return got


def summary(changes: list[common_pb2.ItemChange]) -> list[tuple[str, str]]:
    """(change kind, rating key) of each change, in order."""
    return [(common_pb2.ChangeKind.Name(c.kind).removeprefix("CHANGE_KIND_"), c.rating_key) for c in changes]
