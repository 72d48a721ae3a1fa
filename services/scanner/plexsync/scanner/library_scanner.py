"""One scan of one library: page through Plex, decide what changed, stream batches to the catalog.

Memory stays flat as a library grows: listings are paged (one page in memory), full-metadata fetches
are bounded (at most ``concurrency`` requests and a few batches in flight), items go to the catalog
in batches as soon as they are converted, and the only per-library structure is the compact ETag map
loaded from the catalog (`EtagMap`). Shows are walked one show at a time (its seasons and its
episodes' listing entries), so a show's subtree is the largest thing held, and only while it is
being compared.

INCREMENTAL fetches full metadata only for items whose ETag differs from the catalog's (or that the
catalog has as FILE_NOT_FOUND) and reports the rest as ``seen_rating_keys``; DEEP fetches every item.
FinishScan is called only after every listing completed and every batch was acknowledged, so a
failed or cancelled scan never marks anything missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from opentelemetry import trace
from plexsync.common.metrics import METRICS
from plexsync.scanner.convert import local_signature, to_collection, to_item
from plexsync.scanner.etag import Rollup, item_etag, listing_fingerprint
from plexsync.scanner.paths import FILE_NOT_FOUND, FileStates
from plexsync.scanner.plex_client import (
    TYPE_COLLECTION,
    TYPE_EPISODE,
    TYPE_MOVIE,
    TYPE_SEASON,
    TYPE_SHOW,
    PlexClient,
    PlexError,
    PlexUnauthorizedError,
    collect,
)
from plexsync.scanner.plex_models import PlexMetadata
from plexsync.scanner.ports import Catalog
from plexsync.v1 import catalog_pb2, common_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer("plexsync.scanner")

ItemErrorHook = Callable[[str, str, str, int], Awaitable[None]]


@dataclass(slots=True)
class Counters:
    """ScanCounts, as the scan goes."""

    seen: int = 0
    total: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    missing: int = 0
    restored: int = 0
    fetched: int = 0

    def to_proto(self) -> common_pb2.ScanCounts:
        return common_pb2.ScanCounts(
            seen=self.seen,
            total=max(self.total, self.seen),
            added=self.added,
            updated=self.updated,
            unchanged=self.unchanged,
            failed=self.failed,
            missing=self.missing,
            restored=self.restored,
            fetched=self.fetched,
        )

    @property
    def done(self) -> int:
        return self.added + self.updated + self.unchanged + self.failed


@dataclass(slots=True)
class ScanOptions:
    page_size: int = 500
    concurrency: int = 8
    batch_size: int = 200
    metadata_batch: int = 10


class EtagMap:
    """The catalog's ETags for one library: rating key -> digest, kept compact.

    Numeric rating keys are stored as ints and hex SHA-1 ETags as 20 raw bytes; an item the catalog
    has as FILE_NOT_FOUND is stored with an empty digest, so it never matches and gets rewritten.
    """

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map: dict[int | str, bytes] = {}

    @staticmethod
    def _key(rating_key: str) -> int | str:
        return int(rating_key) if rating_key.isdigit() and len(rating_key) < 19 else rating_key

    @staticmethod
    def _digest(etag: str) -> bytes:
        if len(etag) == 40:
            try:
                return bytes.fromhex(etag)
            except ValueError:
                pass
        return etag.encode()

    def put(self, rating_key: str, etag: str, state: int = 0) -> None:
        self._map[self._key(rating_key)] = b"" if state == FILE_NOT_FOUND or not etag else self._digest(etag)

    def unchanged(self, rating_key: str, etag: str) -> bool:
        have = self._map.get(self._key(rating_key))
        return bool(have) and have == self._digest(etag)

    def __contains__(self, rating_key: object) -> bool:
        return isinstance(rating_key, str) and self._key(rating_key) in self._map

    def __len__(self) -> int:
        return len(self._map)

    @classmethod
    async def load(cls, stream: AsyncIterator[catalog_pb2.ItemEtag]) -> EtagMap:
        out = cls()
        async for e in stream:
            out.put(e.rating_key, e.etag, e.state)
        return out


class CatalogWriteError(RuntimeError):
    """The catalog refused or lost a batch; the scan cannot go on."""


class BatchWriter:
    """Streams WriteItems batches over one bidi call; at most ``max_in_flight`` unacknowledged."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        library_id: str,
        scan_id: str,
        counters: Counters,
        batch_size: int,
        max_in_flight: int = 4,
    ) -> None:
        self._catalog = catalog
        self._library_id = library_id
        self._scan_id = scan_id
        self._counters = counters
        self._batch_size = batch_size
        self._seen_cap = max(batch_size * 10, 1000)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: asyncio.Queue[catalog_pb2.WriteItemsRequest | None] = asyncio.Queue()
        self._items: list[common_pb2.Item] = []
        self._seen: list[str] = []
        self._collections: list[common_pb2.Collection] = []
        self._unchanged_seen = 0
        self._sequence = 0
        self._in_flight: dict[int, tuple[int, int, float]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.last_flush = time.monotonic()

    async def __aenter__(self) -> BatchWriter:
        self._reader = asyncio.create_task(self._read(), name=f"write-acks-{self._scan_id}")
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    async def _requests(self) -> AsyncIterator[catalog_pb2.WriteItemsRequest]:
        while True:
            req = await self._queue.get()
            if req is None:
                return
            yield req

    async def _read(self) -> None:
        async for ack in self._catalog.write_items(self._requests()):
            sent = self._in_flight.pop(ack.sequence, None)
            if sent is None:
                raise CatalogWriteError(f"catalog acknowledged unknown batch {ack.sequence}")
            n_items, n_unchanged_seen, sent_at = sent
            METRICS.catalog_batch_duration.record(time.monotonic() - sent_at)
            c = self._counters
            c.added += ack.added
            c.updated += ack.updated
            c.restored += ack.restored
            c.unchanged += n_unchanged_seen + max(0, n_items - ack.added - ack.updated)
            self._slots.release()

    def _check_reader(self) -> None:
        if self._reader is not None and self._reader.done():
            exc = self._reader.exception()
            if exc is not None:
                raise CatalogWriteError(f"catalog WriteItems failed: {exc}") from exc
            if self._in_flight or self._queue.qsize():
                raise CatalogWriteError("catalog closed the WriteItems stream early")

    async def add_item(self, item: common_pb2.Item) -> None:
        self._items.append(item)
        if len(self._items) >= self._batch_size:
            await self.flush()

    async def add_seen(self, rating_key: str, *, unchanged: bool = True) -> None:
        self._seen.append(rating_key)
        if unchanged:
            self._unchanged_seen += 1
        if len(self._seen) >= self._seen_cap:
            await self.flush()

    async def add_collection(self, coll: common_pb2.Collection) -> None:
        self._collections.append(coll)
        if len(self._collections) >= self._batch_size:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not (self._items or self._seen or self._collections):
                return
            self._check_reader()
            acquire = asyncio.ensure_future(self._slots.acquire())
            assert self._reader is not None
            done, _ = await asyncio.wait({acquire, self._reader}, return_when=asyncio.FIRST_COMPLETED)
            if acquire not in done:
                acquire.cancel()
                self._check_reader()
                raise CatalogWriteError("catalog closed the WriteItems stream early")
            self._sequence += 1
            req = catalog_pb2.WriteItemsRequest(
                library_id=self._library_id,
                scan_id=self._scan_id,
                sequence=self._sequence,
                items=self._items,
                seen_rating_keys=self._seen,
                collections=self._collections,
            )
            self._in_flight[self._sequence] = (len(self._items), self._unchanged_seen, time.monotonic())
            self._items, self._seen, self._collections, self._unchanged_seen = [], [], [], 0
            self.last_flush = time.monotonic()
            self._queue.put_nowait(req)

    async def close(self) -> None:
        await self.flush()
        self._queue.put_nowait(None)
        assert self._reader is not None
        try:
            await self._reader
        except Exception as exc:
            raise CatalogWriteError(f"catalog WriteItems failed: {exc}") from exc
        if self._in_flight:
            raise CatalogWriteError(f"catalog did not acknowledge batches {sorted(self._in_flight)}")

    async def abort(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


@dataclass(slots=True)
class _Pending:
    rating_key: str
    etag: str
    title: str


@dataclass(slots=True)
class _Episode:
    rating_key: str
    parent: str
    etag: str
    title: str


@dataclass
class LibraryScanner:
    """Scans one library into the catalog. ``await LibraryScanner(...).run()`` -> FinishScanResponse."""

    plex: PlexClient
    catalog: Catalog
    library: common_pb2.Library
    scan_id: str
    mode: common_pb2.ScanMode.ValueType
    states: FileStates
    options: ScanOptions
    counters: Counters
    on_item_error: ItemErrorHook
    start_time: float = field(default_factory=time.time)
    phase: str = "starting"
    etags: EtagMap = field(default_factory=EtagMap)
    _writer: BatchWriter | None = None
    _fetch_slots: asyncio.Semaphore | None = None

    @property
    def deep(self) -> bool:
        return self.mode == common_pb2.SCAN_MODE_DEEP

    @property
    def writer(self) -> BatchWriter:
        assert self._writer is not None
        return self._writer

    async def run(self) -> catalog_pb2.FinishScanResponse:
        lib = self.library
        with tracer.start_as_current_span("scan.library") as span:
            span.set_attribute("plexsync.library_id", lib.id)
            span.set_attribute("plexsync.scan_id", self.scan_id)
            self.phase = "listing"
            self.etags = await EtagMap.load(self.catalog.item_etags(lib.id))
            self._fetch_slots = asyncio.Semaphore(self.options.concurrency * 2)
            async with BatchWriter(
                self.catalog,
                library_id=lib.id,
                scan_id=self.scan_id,
                counters=self.counters,
                batch_size=self.options.batch_size,
            ) as writer:
                self._writer = writer
                if lib.kind == common_pb2.LIBRARY_KIND_SHOWS:
                    await self._scan_shows()
                else:
                    await self._scan_flat()
                await self._scan_collections()
                self.phase = "finishing"
            request = catalog_pb2.FinishScanRequest(library_id=lib.id, scan_id=self.scan_id, mode=self.mode)
            request.start_time.FromNanoseconds(int(self.start_time * 1e9))
            result = await self.catalog.finish_scan(request)
            self.counters.missing = result.missing
            return result

    async def periodic_flush(self, interval: float = 1.0) -> None:
        """Flush partial batches regularly, so progress is visible on slow servers."""
        while True:
            await asyncio.sleep(interval)
            if self._writer is not None and time.monotonic() - self._writer.last_flush >= interval:
                await self._writer.flush()

    # ------------------------------------------------------------------ decisions
    def _etag(self, meta: PlexMetadata, children: Rollup | None = None) -> str:
        return item_etag(meta, local=local_signature(meta, self.states), children=children)

    def _changed(self, rating_key: str, etag: str) -> bool:
        return self.deep or not self.etags.unchanged(rating_key, etag)

    # ------------------------------------------------------------------ movies / other videos
    async def _scan_flat(self) -> None:
        key = self.library.plex_key
        async with task_group() as tg:
            pending: list[_Pending] = []
            async for page in self.plex.section_items(key, TYPE_MOVIE, page_size=self.options.page_size):
                self.counters.total = page.total_size or 0
                self.phase = "fetching"
                for meta in page.items:
                    self.counters.seen += 1
                    etag = self._etag(meta)
                    if self._changed(meta.rating_key, etag):
                        pending.append(_Pending(meta.rating_key, etag, meta.title))
                        if len(pending) >= self.options.metadata_batch:
                            await self._spawn(tg, pending)
                            pending = []
                    else:
                        await self.writer.add_seen(meta.rating_key)
            if pending:
                await self._spawn(tg, pending)

    async def _spawn(self, tg: asyncio.TaskGroup, batch: list[_Pending]) -> None:
        assert self._fetch_slots is not None
        await self._fetch_slots.acquire()

        async def run() -> None:
            try:
                await self._fetch_and_write(batch)
            finally:
                assert self._fetch_slots is not None
                self._fetch_slots.release()

        tg.create_task(run())

    async def _fetch_and_write(self, batch: list[_Pending]) -> set[str]:
        """Fetch full metadata for ``batch`` and write it; returns the rating keys that failed."""
        failed: set[str] = set()
        try:
            metas = await self.plex.metadata([p.rating_key for p in batch])
            self.counters.fetched += len(batch)
        except PlexUnauthorizedError:
            raise
        except PlexError as exc:
            if len(batch) > 1:
                # One bad item (gone since the listing, say) fails a multi-id request: go one by one.
                for p in batch:
                    failed |= await self._fetch_and_write([p])
                return failed
            await self._item_failed(batch[0], str(exc), exc.status)
            return {batch[0].rating_key}
        by_key = {m.rating_key: m for m in metas}
        for p in batch:
            meta = by_key.get(p.rating_key)
            if meta is None:
                await self._item_failed(p, "Plex returned no metadata for the item", 0)
                failed.add(p.rating_key)
                continue
            try:
                item = to_item(
                    meta,
                    library_id=self.library.id,
                    library_kind=self.library.kind,
                    etag=p.etag,
                    states=self.states,
                )
            except Exception as exc:  # a malformed entry must not stop the scan
                log.warning("could not convert Plex item", extra={"rating_key": p.rating_key}, exc_info=True)
                await self._item_failed(p, f"could not read Plex's metadata: {exc}", 0)
                failed.add(p.rating_key)
                continue
            await self.writer.add_item(item)
        return failed

    async def _item_failed(self, p: _Pending, message: str, status: int) -> None:
        self.counters.failed += 1
        if p.rating_key in self.etags:
            # Seen, so FinishScan does not mark it missing; its old ETag stays, so the next scan retries.
            await self.writer.add_seen(p.rating_key, unchanged=False)
        await self.on_item_error(p.rating_key, p.title, message, status)

    # ------------------------------------------------------------------ shows
    async def _scan_shows(self) -> None:
        key = self.library.plex_key
        counts = await asyncio.gather(
            self.plex.section_count(key, TYPE_SHOW),
            self.plex.section_count(key, TYPE_SEASON),
            self.plex.section_count(key, TYPE_EPISODE),
        )
        self.counters.total = sum(counts)
        show_slots = asyncio.Semaphore(self.options.concurrency)
        async with task_group() as tg:
            async for page in self.plex.section_items(key, TYPE_SHOW, page_size=self.options.page_size):
                self.phase = "fetching"
                for show in page.items:
                    await show_slots.acquire()
                    tg.create_task(self._scan_show_slot(show, show_slots))

    async def _scan_show_slot(self, show: PlexMetadata, slots: asyncio.Semaphore) -> None:
        try:
            await self._scan_show(show)
        finally:
            slots.release()

    async def _scan_show(self, show: PlexMetadata) -> None:
        ps = self.options.page_size
        try:
            seasons, leaves = await asyncio.gather(
                collect(self.plex.children(show.rating_key, page_size=ps)),
                self._episode_entries(show.rating_key),
            )
        except PlexUnauthorizedError:
            raise
        except PlexError as exc:
            # The show cannot be listed: everything under it stays as it is (seen, not missing).
            self.counters.seen += 1
            pending = _Pending(show.rating_key, "", show.title)
            await self._item_failed(pending, f"could not list the show: {exc}", exc.status)
            return
        rollups: dict[str, Rollup] = {s.rating_key: Rollup() for s in seasons}
        for ep in leaves:
            rollups.setdefault(ep.parent, Rollup()).add(ep.rating_key, ep.etag)
        show_rollup = Rollup()
        season_entries: list[_Pending] = []
        for s in seasons:
            etag = self._etag(s, rollups[s.rating_key])
            show_rollup.add(s.rating_key, etag)
            season_entries.append(_Pending(s.rating_key, etag, s.title))
        show_etag = self._etag(show, show_rollup)
        self.counters.seen += 1 + len(seasons) + len(leaves)

        # Parents before children: the show, then its seasons, then its episodes.
        blocked: set[str] = set()
        if self._changed(show.rating_key, show_etag):
            failed = await self._fetch_and_write([_Pending(show.rating_key, show_etag, show.title)])
            if failed and show.rating_key not in self.etags:
                blocked.add(show.rating_key)
        else:
            await self.writer.add_seen(show.rating_key)
        if blocked:
            await self._skip_children(season_entries, leaves, show.title)
            return
        changed_seasons = [s for s in season_entries if self._changed(s.rating_key, s.etag)]
        for entry in season_entries:
            if entry not in changed_seasons:
                await self.writer.add_seen(entry.rating_key)
        failed_seasons: set[str] = set()
        for chunk in _chunks(changed_seasons, self.options.metadata_batch):
            failed_seasons |= await self._fetch_and_write(chunk)
        blocked = {rk for rk in failed_seasons if rk not in self.etags}
        changed_eps: list[_Pending] = []
        for ep in leaves:
            if ep.parent in blocked:
                await self._skip_children([], [ep], show.title)
            elif self._changed(ep.rating_key, ep.etag):
                changed_eps.append(_Pending(ep.rating_key, ep.etag, ep.title))
            else:
                await self.writer.add_seen(ep.rating_key)
        if changed_eps:
            await asyncio.gather(
                *(self._fetch_and_write(chunk) for chunk in _chunks(changed_eps, self.options.metadata_batch))
            )

    async def _episode_entries(self, show_key: str) -> list[_Episode]:
        """A show's episodes as compact (key, season, ETag) entries, from its paged ``allLeaves``."""
        out: list[_Episode] = []
        async for page in self.plex.all_leaves(show_key, page_size=self.options.page_size):
            for ep in page.items:
                out.append(_Episode(ep.rating_key, ep.parent_rating_key, self._etag(ep), ep.title))
        return out

    async def _skip_children(self, seasons: list[_Pending], episodes: list[_Episode], show_title: str) -> None:
        """Children of a new parent that could not be fetched: not written (no parent), retried next scan."""
        for s in seasons:
            self.counters.failed += 1
            if s.rating_key in self.etags:
                await self.writer.add_seen(s.rating_key, unchanged=False)
        for ep in episodes:
            self.counters.failed += 1
            if ep.rating_key in self.etags:
                await self.writer.add_seen(ep.rating_key, unchanged=False)

    # ------------------------------------------------------------------ collections
    async def _scan_collections(self) -> None:
        key = self.library.plex_key
        ps = self.options.page_size
        async for page in self.plex.section_items(key, TYPE_COLLECTION, page_size=ps):
            metas = page.items

            async def one(c: PlexMetadata) -> None:
                try:
                    listing = self.plex.collection_children(c.rating_key, page_size=ps)
                    members = [m.rating_key for m in await collect(listing)]
                except PlexUnauthorizedError:
                    raise
                except PlexError as exc:
                    await self.on_item_error(c.rating_key, c.title, f"could not list the collection: {exc}", exc.status)
                    self.counters.failed += 1
                    return
                h = hashlib.sha1("\x1f".join([*listing_fingerprint(c), *members]).encode(), usedforsecurity=False)
                coll = to_collection(c, library_id=self.library.id, etag=h.hexdigest(), members=members)
                await self.writer.add_collection(coll)

            await asyncio.gather(*(one(c) for c in metas))


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup that re-raises its most telling failure itself, not wrapped in an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        raise _primary(group) from group


def _primary(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for exc in g.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                leaves.append(exc)

    walk(group)
    for kind in (PlexUnauthorizedError, CatalogWriteError, PlexError):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0] if leaves else group


def _chunks(items: list[_Pending], size: int) -> list[list[_Pending]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
