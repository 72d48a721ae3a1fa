"""Turn one section's batch of notifications into catalog writes, through the same path a scan takes.

Upserts: the items' full metadata in as few requests as Plex allows (up to ``metadata_batch`` rating keys
per ``/library/metadata/1,2,3``), converted with the scan's `to_item` (same validation, path mapping and file
state), written with WriteItems without a scan id (a real-time update: nothing is recorded as seen), parents
before children. Deletions: each item is asked of Plex first; only a 404 makes it FILE_NOT_FOUND
(MarkItemsMissing, children included) — an entry with state 9 for an item Plex still has is an upsert.

ETags: a scan's ETag is computed from a *listing* entry, which a metadata response cannot reproduce (it
carries every tag and stream, a listing only some). A real-time write stores ``REALTIME_ETAG`` + the
item's own fingerprint instead, so the next incremental scan confirms exactly these items with one metadata
request each and stores their listing ETags; parents' roll-ups change with their children anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from plexsync.scanner.convert import to_item
from plexsync.scanner.etag import item_etag
from plexsync.scanner.paths import FileStates
from plexsync.scanner.plex_client import PlexClient, PlexError, PlexNotFoundError, PlexUnauthorizedError
from plexsync.scanner.plex_models import PlexMetadata
from plexsync.scanner.realtime.batcher import SectionBatch
from plexsync.scanner.rules.evaluate import SyncRules
from plexsync.v1 import catalog_pb2, common_pb2

log = logging.getLogger(__name__)

REALTIME_ETAG = "realtime:"
# Parents first, so a new show's seasons and episodes find it in the same stream.
_WRITE_ORDER = {"show": 0, "season": 1, "episode": 2}
WRITE_BATCH = 200


class RealtimeCatalog(Protocol):
    def write_items(
        self, requests: AsyncIterator[catalog_pb2.WriteItemsRequest]
    ) -> AsyncIterator[catalog_pb2.WriteItemsResponse]: ...

    async def mark_items_missing(self, library_id: str, rating_keys: list[str]) -> list[common_pb2.ItemChange]: ...


@dataclass(slots=True)
class Applied:
    """What one batch did: the committed changes, and what the watcher should know about the rest."""

    changes: list[common_pb2.ItemChange] = field(default_factory=list)
    plex_requests: int = 0
    failed: list[str] = field(default_factory=list)
    # When each changed item's change happened, as well as we know it (for the delay metric).
    changed_at: dict[str, float] = field(default_factory=dict)


class BatchApplier:
    def __init__(self, plex: PlexClient, catalog: RealtimeCatalog, *, metadata_batch: int = 50) -> None:
        self.plex, self.catalog, self.metadata_batch = plex, catalog, metadata_batch

    async def apply(self, library: common_pb2.Library, states: FileStates, batch: SectionBatch) -> Applied:
        out = Applied()
        gone: list[str] = []
        present = await self._fetch(list(batch.deletes), out, gone)  # Plex answers 404 for what is really gone
        metas = present + await self._fetch(list(batch.upserts), out, gone)
        returned = {m.rating_key for m in metas}
        # A multi-key answer may leave out what is gone (real Plex does; fakeplex answers 404).
        gone.extend(rk for rk in batch.deletes if rk not in returned and rk not in gone and rk not in out.failed)
        metas.sort(key=lambda m: _WRITE_ORDER.get(m.type, 3))
        items: list[common_pb2.Item] = []
        # The library's sync rules, as a scan applies them (full metadata decides everything here).
        rules = (
            None if library.kind == common_pb2.LIBRARY_KIND_SHOWS else SyncRules.compile(library.sync_rules.expression)
        )
        for meta in metas:
            try:
                items.append(
                    to_item(
                        meta, library_id=library.id, library_kind=library.kind, states=states,
                        etag=REALTIME_ETAG + item_etag(meta),
                    )
                )  # fmt: skip
                if rules is not None and not rules.metadata_verdict(meta, states, library.kind)[0]:
                    items[-1].state = common_pb2.ITEM_STATE_EXCLUDED
            except Exception:  # a malformed entry must not stop the others
                log.warning("could not convert Plex item", extra={"rating_key": meta.rating_key}, exc_info=True)
                out.failed.append(meta.rating_key)
        if items:
            out.changes.extend(await self._write(library.id, items))
        if gone:
            out.changes.extend(await self.catalog.mark_items_missing(library.id, gone))
        for rk in [*batch.upserts, *batch.deletes]:
            entry = batch.upserts.get(rk) or batch.deletes[rk]
            # Plex's updatedAt is in whole seconds; never earlier than the notification itself could be.
            out.changed_at[rk] = max(float(entry.updated_at), batch.received.get(rk, time.time()) - 1.0)
        return out

    async def _fetch(self, keys: list[str], out: Applied, gone: list[str]) -> list[PlexMetadata]:
        metas: list[PlexMetadata] = []
        for start in range(0, len(keys), self.metadata_batch):
            chunk = keys[start : start + self.metadata_batch]
            out.plex_requests += 1
            try:
                metas.extend(await self.plex.metadata(chunk))
            except PlexUnauthorizedError:
                raise
            except PlexNotFoundError:
                if len(chunk) == 1:
                    gone.append(chunk[0])  # deleted since the notification
                    continue
                metas.extend(await self._fetch_one_by_one(chunk, out, gone))
            except PlexError:
                if len(chunk) == 1:
                    out.failed.append(chunk[0])
                    continue
                metas.extend(await self._fetch_one_by_one(chunk, out, gone))
        return metas

    async def _fetch_one_by_one(self, chunk: list[str], out: Applied, gone: list[str]) -> list[PlexMetadata]:
        """One bad (or deleted) item fails a multi-key request: find which (the client bounds concurrency)."""
        found = await asyncio.gather(*(self._fetch([rk], out, gone) for rk in chunk))
        return [meta for metas in found for meta in metas]

    async def _write(self, library_id: str, items: list[common_pb2.Item]) -> list[common_pb2.ItemChange]:
        async def requests() -> AsyncIterator[catalog_pb2.WriteItemsRequest]:
            for seq, start in enumerate(range(0, len(items), WRITE_BATCH), start=1):
                yield catalog_pb2.WriteItemsRequest(
                    library_id=library_id, sequence=seq, items=items[start : start + WRITE_BATCH]
                )

        changes: list[common_pb2.ItemChange] = []
        async for ack in self.catalog.write_items(requests()):
            changes.extend(ack.changes)
        return changes
