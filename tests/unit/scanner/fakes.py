"""An in-memory stand-in for the catalog's scan-facing RPCs (unit tests only; integration tests use the real one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from plexsync.v1 import catalog_pb2, common_pb2


@dataclass
class MemoryCatalog:
    library: common_pb2.Library
    rules: list[common_pb2.PathReplacement] = field(default_factory=list)
    items: dict[str, common_pb2.Item] = field(default_factory=dict)
    collections: dict[str, common_pb2.Collection] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    batches: int = 0
    writes: int = 0
    fail_after_batches: int | None = None
    change_seq: int = 0

    async def get_library(self, library_id: str) -> common_pb2.Library:
        return self.library

    async def list_path_replacements(self, server_id: str) -> list[common_pb2.PathReplacement]:
        return list(self.rules)

    async def item_etags(self, library_id: str) -> AsyncIterator[catalog_pb2.ItemEtag]:
        for item in list(self.items.values()):
            yield catalog_pb2.ItemEtag(rating_key=item.rating_key, etag=item.etag, kind=item.kind, state=item.state)

    async def write_items(
        self, requests: AsyncIterator[catalog_pb2.WriteItemsRequest]
    ) -> AsyncIterator[catalog_pb2.WriteItemsResponse]:
        self.seen = set()
        self.collections_seen: set[str] = set()
        async for req in requests:
            if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
                raise RuntimeError("catalog went away")
            self.batches += 1
            ack = catalog_pb2.WriteItemsResponse(sequence=req.sequence)
            for item in req.items:
                if item.parent_rating_key and item.parent_rating_key not in self.items:
                    raise RuntimeError(f"parent {item.parent_rating_key} of {item.rating_key} not written yet")
                old = self.items.get(item.rating_key)
                change = common_pb2.CHANGE_KIND_UNSPECIFIED
                if old is None:
                    ack.added += 1
                    change = common_pb2.CHANGE_KIND_ADDED
                elif old.state == common_pb2.ITEM_STATE_FILE_NOT_FOUND:
                    ack.updated += 1
                    ack.restored += 1
                    change = common_pb2.CHANGE_KIND_RESTORED
                elif old != item:
                    ack.updated += 1
                    change = common_pb2.CHANGE_KIND_UPDATED
                else:
                    ack.unchanged += 1
                if change and not req.scan_id:  # a real-time update hears what it committed
                    ack.changes.append(self._change(item, change))
                self.items[item.rating_key] = item
                self.writes += 1
                self.seen.add(item.rating_key)
            for rk in req.seen_rating_keys:
                self.seen.add(rk)
                ack.unchanged += 1
            for c in req.collections:
                self.collections[c.rating_key] = c
                self.collections_seen.add(c.rating_key)
            yield ack

    async def finish_scan(self, request: catalog_pb2.FinishScanRequest) -> catalog_pb2.FinishScanResponse:
        missing = 0
        for rk, item in self.items.items():
            if rk not in self.seen and item.state != common_pb2.ITEM_STATE_FILE_NOT_FOUND:
                item.state = common_pb2.ITEM_STATE_FILE_NOT_FOUND
                missing += 1
        removed = [rk for rk in self.collections if rk not in self.collections_seen]
        for rk in removed:
            del self.collections[rk]
        return catalog_pb2.FinishScanResponse(
            missing=missing, present=len(self.items) - missing, collections_removed=len(removed)
        )

    async def register_libraries(
        self, request: catalog_pb2.RegisterLibrariesRequest
    ) -> catalog_pb2.RegisterLibrariesResponse:
        return catalog_pb2.RegisterLibrariesResponse()

    def _change(self, item: common_pb2.Item, kind: common_pb2.ChangeKind.ValueType) -> common_pb2.ItemChange:
        self.change_seq += 1
        return common_pb2.ItemChange(
            resume_token=str(self.change_seq), library_id=self.library.id, rating_key=item.rating_key,
            item_kind=item.kind, kind=kind, source=common_pb2.CHANGE_SOURCE_REALTIME, state=item.state,
            title=item.title,
        )  # fmt: skip

    async def mark_items_missing(self, library_id: str, rating_keys: list[str]) -> list[common_pb2.ItemChange]:
        doomed = set(rating_keys)
        grew = True
        while grew:  # children follow their parents
            more = {rk for rk, i in self.items.items() if i.parent_rating_key in doomed} - doomed
            doomed |= more
            grew = bool(more)
        changes = []
        for rk in sorted(doomed):
            item = self.items.get(rk)
            if item is not None and item.state != common_pb2.ITEM_STATE_FILE_NOT_FOUND:
                item.state = common_pb2.ITEM_STATE_FILE_NOT_FOUND
                changes.append(self._change(item, common_pb2.CHANGE_KIND_MISSING))
        return changes

    def present(self) -> dict[str, common_pb2.Item]:
        return {rk: i for rk, i in self.items.items() if i.state != common_pb2.ITEM_STATE_FILE_NOT_FOUND}
