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

A broken Plex answer (see plex_client.py) fails the scan when it stands for a whole page (a body that does not
parse, is too large, or a listing that does not advance): nothing after it is written and FinishScan is not
called. A broken entry within a good page (a value of the wrong type, no rating key, a video without media)
skips that item only: it is counted as failed, reported as an item error and logged, and, when the catalog
has it, reported seen so it is neither rewritten nor marked missing. A broken collection fails the scan, since
a collection a completed scan did not write is deleted. A rating key a listing repeats is handled once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from opentelemetry import trace
from plexsync.common.metrics import METRICS
from plexsync.scanner.convert import local_signature, raw_local_signature, to_collection, to_item
from plexsync.scanner.etag import Rollup, item_etag, listing_fingerprint, raw_item_etag
from plexsync.scanner.listing import Entry, ListingPool, PageDigest, digest_page
from plexsync.scanner.paths import FILE_NOT_FOUND, FileStates
from plexsync.scanner.plex_client import (
    TYPE_COLLECTION,
    TYPE_EPISODE,
    TYPE_MOVIE,
    TYPE_SEASON,
    TYPE_SHOW,
    Listed,
    PlexClient,
    PlexError,
    PlexMalformedError,
    PlexNotFoundError,
    PlexUnauthorizedError,
    page_headers,
)
from plexsync.scanner.plex_models import (
    PlexMetadata,
    PlexParseError,
    Raw,
    check_entry,
    entry_key,
    plausible_total,
    read_str,
    total_size,
)
from plexsync.scanner.ports import Catalog
from plexsync.scanner.rules.evaluate import SyncRules
from plexsync.scanner.rules.shows import ShowVerdicts, follow, show_context
from plexsync.scanner.stats import ScanStats
from plexsync.v1 import catalog_pb2, common_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer("plexsync.scanner")

# Listing pages fetched ahead, and one in LISTING_LANES of them decoded in-process, the rest by the worker (which
# has nothing else to do, while this process also receives every page and processes every entry).
LISTING_AHEAD, LISTING_LANES = 3, 3

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
    excluded: int = 0

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
            excluded=self.excluded,
        )

    @property
    def done(self) -> int:
        return self.added + self.updated + self.unchanged + self.failed


@dataclass(slots=True)
class ScanOptions:
    page_size: int = 500
    concurrency: int = 8
    batch_size: int = 200
    metadata_batch: int = 50


class EtagMap:
    """The catalog's ETags for one library: rating key -> digest, kept compact.

    Numeric rating keys are stored as ints and hex SHA-1 ETags as 20 raw bytes; an item the catalog
    has as FILE_NOT_FOUND is stored with an empty digest, so it never matches and gets rewritten.
    A key this scan has seen (listed, written or reported seen) has its digest turned into a ``bytearray``
    in place (`mark_seen`), so "in the catalog but not seen by this scan" (`unseen`) needs no second
    per-library structure.
    """

    __slots__ = ("_map", "excluded")

    def __init__(self) -> None:
        self._map: dict[int | str, bytes | bytearray] = {}
        self.excluded: set[str] = set()  # rating keys the catalog has as EXCLUDED (sync rules)

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
        if state == common_pb2.ITEM_STATE_EXCLUDED:
            self.excluded.add(rating_key)
        self._map[self._key(rating_key)] = b"" if state == FILE_NOT_FOUND or not etag else self._digest(etag)

    def unchanged(self, rating_key: str, etag: str) -> bool:
        have = self._map.get(self._key(rating_key))
        return bool(have) and have == self._digest(etag)

    def claim_unchanged(self, rating_key: str, etag: str) -> bool:
        """`unchanged`, and if so `mark_seen` too, with one lookup (the hot path of an incremental scan)."""
        key = self._key(rating_key)
        have = self._map.get(key)
        if not have or have != self._digest(etag):
            return False
        if have.__class__ is bytes:
            self._map[key] = bytearray(have)
        return True

    def mark_seen(self, rating_key: str) -> None:
        key = self._key(rating_key)
        have = self._map.get(key)
        if have is not None and have.__class__ is bytes:
            self._map[key] = bytearray(have)

    def unseen(self) -> list[str]:
        """Rating keys the catalog has (and not as FILE_NOT_FOUND) that this scan has not seen."""
        return [str(k) for k, v in self._map.items() if v and v.__class__ is bytes]

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
        on_seen: Callable[[str], None] | None = None,
        stats: ScanStats | None = None,
    ) -> None:
        self._catalog = catalog
        self._stats = stats if stats is not None else ScanStats()
        self._on_seen = on_seen
        self._batch_keys: dict[str, int] = {}
        self._library_id = library_id
        self._scan_id = scan_id
        self._counters = counters
        self._batch_size = batch_size
        self._seen_cap = max(batch_size * 10, 1000)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: asyncio.Queue[catalog_pb2.WriteItemsRequest | None] = asyncio.Queue()
        self._batch = catalog_pb2.WriteItemsRequest()  # items are built in place here (no copy per item)
        self._seen: list[str] = []
        self._excluded: list[str] = []
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
            elapsed = time.monotonic() - sent_at
            METRICS.catalog_batch_duration.record(elapsed)
            self._stats.catalog_write(elapsed)
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
        self.build_item(lambda new: _copied(new, item))
        await self.flush_if_full()

    async def flush_if_full(self) -> None:
        if len(self._batch.items) >= self._batch_size:
            await self.flush()

    def build_item(self, build: Callable[[Callable[..., common_pb2.Item]], common_pb2.Item]) -> None:
        """Add the item ``build(new)`` makes with ``new(**fields)``, which creates it inside the batch request
        (an Item built apart and then added would be copied). Call `flush_if_full` next."""
        items = self._batch.items
        size = len(items)
        try:
            item = build(items.add)
        except BaseException:
            if len(items) > size:
                del items[size:]
            raise
        if self._on_seen is not None:
            self._on_seen(item.rating_key)
        at = self._batch_keys.get(item.rating_key)
        if at is not None:
            # Listed twice (offset paging while Plex changes): a batch may hold a rating key once; keep the newest.
            items[at].CopyFrom(item)
            del items[-1]
            return
        self._batch_keys[item.rating_key] = size

    def add_claimed(self, rating_key: str) -> bool:
        """An unchanged item already marked seen (`EtagMap.claim_unchanged`); True when `flush` is due."""
        self._seen.append(rating_key)
        self._unchanged_seen += 1
        return len(self._seen) >= self._seen_cap

    async def add_seen(self, rating_key: str, *, unchanged: bool = True) -> None:
        if self._on_seen is not None:
            self._on_seen(rating_key)
        self._seen.append(rating_key)
        if unchanged:
            self._unchanged_seen += 1
        if len(self._seen) >= self._seen_cap:
            await self.flush()

    async def add_excluded(self, rating_key: str) -> None:
        """A catalog item the sync rules now leave out (decided on the listing): marked EXCLUDED, and seen."""
        if self._on_seen is not None:
            self._on_seen(rating_key)
        self._excluded.append(rating_key)
        if len(self._excluded) >= self._seen_cap:
            await self.flush()

    async def add_collection(self, coll: common_pb2.Collection) -> None:
        self._collections.append(coll)
        if len(self._collections) >= self._batch_size:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not (self._batch.items or self._seen or self._collections or self._excluded):
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
            req, self._batch = self._batch, catalog_pb2.WriteItemsRequest()
            req.library_id, req.scan_id, req.sequence = self._library_id, self._scan_id, self._sequence
            req.seen_rating_keys.extend(self._seen)
            req.collections.extend(self._collections)
            req.excluded_rating_keys.extend(self._excluded)
            self._in_flight[self._sequence] = (len(req.items), self._unchanged_seen, time.monotonic())
            self._seen, self._collections, self._unchanged_seen, self._excluded = [], [], 0, []
            self._batch_keys = {}
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


def _copied(new: Callable[..., common_pb2.Item], item: common_pb2.Item) -> common_pb2.Item:
    out = new()
    out.CopyFrom(item)
    return out


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
    listing_pool: ListingPool | None = None
    # Shared with the PlexClient, which counts the Plex side; this scanner adds the catalog's.
    stats: ScanStats = field(default_factory=ScanStats)
    # The library's sync rules (compiled from library.sync_rules at the start of `run`); None: keep everything.
    rules: SyncRules | None = None
    _undecided: set[str] = field(default_factory=set)  # listed keys only full metadata can decide
    # Show libraries with rules: each show's verdict on its own fields, and seasons with an excluded episode.
    _show_verdicts: ShowVerdicts = field(default_factory=dict)
    _excluded_parents: set[str] = field(default_factory=set)
    _writer: BatchWriter | None = None
    _etags_loading: asyncio.Task[EtagMap] | None = None
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
            self.rules = SyncRules.compile(lib.sync_rules.expression)
            self.phase = "listing"
            timer = _PhaseTimer()
            # The catalog's ETags load while the first listing page is fetched (`_ensure_etags` before use).
            self._etags_loading = asyncio.create_task(EtagMap.load(self.catalog.item_etags(lib.id)))
            self._fetch_slots = asyncio.Semaphore(self.options.concurrency * 2)
            async with BatchWriter(
                self.catalog,
                library_id=lib.id,
                scan_id=self.scan_id,
                counters=self.counters,
                batch_size=self.options.batch_size,
                on_seen=lambda rating_key: self.etags.mark_seen(rating_key),
                stats=self.stats,
            ) as writer:
                self._writer = writer
                try:
                    if lib.kind == common_pb2.LIBRARY_KIND_SHOWS:
                        await self._scan_shows()
                    else:
                        await self._scan_flat()
                    await self._ensure_etags()
                finally:
                    if self._etags_loading is not None:  # the scan failed before it needed them
                        self._etags_loading.cancel()
                        with contextlib.suppress(BaseException):
                            await self._etags_loading
                        self._etags_loading = None
                timer.lap("items")
                await self._verify_unseen()
                timer.lap("verify")
                await self._scan_collections()
                timer.lap("collections")
                self.phase = "finishing"
            timer.lap("last_acks")
            request = catalog_pb2.FinishScanRequest(library_id=lib.id, scan_id=self.scan_id, mode=self.mode)
            request.start_time.FromNanoseconds(int(self.start_time * 1e9))
            sent = time.monotonic()
            result = await self.catalog.finish_scan(request)
            self.stats.catalog_write(time.monotonic() - sent)
            timer.lap("finish")
            self.counters.missing = result.missing
            for name, seconds in timer.laps.items():
                span.set_attribute(f"plexsync.scan.phase.{name}_seconds", round(seconds, 3))
            log.info(
                "scan phases",
                extra={"scan_id": self.scan_id, "requests": self.plex.requests, **timer.rounded()},
            )
            return result

    async def _ensure_etags(self) -> None:
        if self._etags_loading is not None:
            self.etags = await self._etags_loading
            self._etags_loading = None

    async def periodic_flush(self, interval: float = 1.0) -> None:
        """Flush partial batches regularly, so progress is visible on slow servers."""
        while True:
            await asyncio.sleep(interval)
            if self._writer is not None and time.monotonic() - self._writer.last_flush >= interval:
                await self._writer.flush()

    # ------------------------------------------------------------------ decisions
    def _etag(self, entry: Raw, children: Rollup | None = None) -> str:
        """The ETag of a raw listing entry (see etag.py; equal to ``item_etag`` of the parsed entry)."""
        return raw_item_etag(entry, local=raw_local_signature(entry, self.states), children=children)

    def _changed(self, rating_key: str, etag: str) -> bool:
        """Fetch it: a deep scan, a changed ETag, or EXCLUDED in the catalog and kept now (a show library)."""
        return self.deep or rating_key in self.etags.excluded or not self.etags.unchanged(rating_key, etag)

    # ------------------------------------------------------------------ movies / other videos
    async def _scan_flat(self) -> None:
        key = self.library.plex_key
        async with task_group() as tg:
            pending: list[_Pending] = []
            async for total, entries in self._entries(key, TYPE_MOVIE):
                self.counters.total = total
                self.phase = "fetching"
                # (looked up per page: the catalog's ETags replace the empty map once the first page is in)
                deep, claim, add_claimed = self.deep, self.etags.claim_unchanged, self.writer.add_claimed
                excluded, undecided = self.etags.excluded, self._undecided
                for rating_key, _, title, etag in entries:
                    if excluded and rating_key in excluded:
                        # EXCLUDED in the catalog: the listing keeps it now (fetch it back), or only the metadata
                        # decided it last time and neither the entry nor the rule changed (still excluded).
                        if not deep and rating_key in undecided and claim(rating_key, etag):
                            self._count_excluded(-1)
                            await self.writer.add_seen(rating_key)
                            continue
                    elif not deep and claim(rating_key, etag):
                        if add_claimed(rating_key):
                            await self.writer.flush()
                        continue
                    pending.append(_Pending(rating_key, etag, title))
                    if len(pending) >= self.options.metadata_batch:
                        await self._spawn(tg, pending)
                        pending = []
                self.counters.seen += len(entries)
            if pending:
                await self._spawn(tg, pending)

    async def _entries(self, section_key: str, type_num: int) -> AsyncIterator[tuple[int, list[Entry]]]:
        """A section listing as (totalSize, entries with ETags) per page, in order; a rating key listed again is
        left out and a broken entry is skipped (`_broken_entry`).

        After the first page, up to `LISTING_AHEAD` pages within the listed totalSize are fetched ahead; the listing
        worker process decodes two of every three, this one the third (see listing.py), so a long listing uses two
        cores. The listing ends at the first short page; past totalSize (Plex added items meanwhile), or when
        totalSize is impossible (negative, absurd: treated as unknown), pages come one at a time.
        """
        ps = self.options.page_size
        path = f"/library/sections/{section_key}/all"
        params = {"type": str(type_num), "includeGuids": "1"}
        pool = self.listing_pool if self.listing_pool is not None and self.listing_pool.usable(self.states) else None
        listed = Listed(path)

        async def page(start: int, remote: bool) -> PageDigest:
            async def decode(body: bytes, content_type: str) -> PageDigest:
                rules, kind = self.rules, self.library.kind
                if remote and pool is not None:
                    return await pool.digest(body, content_type, self.states, rules, kind)
                return digest_page(body, content_type, self.states, rules, kind)

            digest, headers = await self.plex.get_decoded(path, params, page_headers(start, ps), decode)
            if digest.total_size is None:
                digest.total_size = plausible_total(total_size({}, headers)) or None
            return digest

        async def fresh(start: int, digest: PageDigest) -> list[Entry]:
            for rating_key, _, title, why in digest.broken:
                if listed.first(rating_key):
                    await self._broken_entry(rating_key, title, why, path)
            out = [e for e in digest.entries if listed.first(e[0])]
            self._undecided.update(digest.undecided)
            fresh_excluded = [x for x in digest.excluded if listed.first(x[0])]
            for rating_key, _, part, parent in fresh_excluded:
                self._excluded_parents.add(parent)
                await self._exclude_listed(rating_key, part)
            listed.check_progress(len(out) + len(digest.broken) + len(fresh_excluded), start, full=digest.listed >= ps)
            return out

        first = await page(0, False)
        await self._ensure_etags()
        total = first.total_size
        yield total or 0, await fresh(0, first)
        if first.listed < ps or (total is not None and ps >= total):
            listed.report()
            return
        ahead: collections.deque[tuple[int, asyncio.Task[PageDigest]]] = collections.deque()
        next_start, planned = ps, 0
        try:
            while True:
                while len(ahead) < LISTING_AHEAD and (not ahead or (total is not None and next_start < total)):
                    listed.check_length(next_start)
                    ahead.append((next_start, asyncio.create_task(page(next_start, planned % LISTING_LANES != 0))))
                    planned += 1
                    next_start += ps
                start, task = ahead.popleft()
                last = await task
                if last.total_size is not None:
                    total = last.total_size
                yield total or 0, await fresh(start, last)
                if last.listed < ps or (not ahead and total is not None and start + ps >= total):
                    return
        finally:
            for _, task in ahead:
                task.cancel()
            listed.report()

    def _count_excluded(self, part: int) -> None:
        """One more excluded item, counted under the rule part that excluded it (-1: decided by an earlier scan)."""
        assert self.rules is not None
        self._count_excluded_as(
            self.rules.names[part] if part >= 0 else "(unchanged since an earlier scan excluded it)"
        )

    def _count_excluded_as(self, name: str) -> None:
        self.counters.excluded += 1
        self.stats.excluded_by_rule[name] = self.stats.excluded_by_rule.get(name, 0) + 1

    async def _exclude_parent(self, rating_key: str, name: str) -> None:
        """A listed show or season the rules leave out (see rules/shows.py): no metadata request; EXCLUDED if the
        catalog has it (already counted as seen by its listing)."""
        self._count_excluded_as(name)
        if rating_key in self.etags.excluded:
            await self.writer.add_seen(rating_key)
        elif rating_key in self.etags:
            await self.writer.add_excluded(rating_key)

    async def _exclude_listed(self, rating_key: str, part: int) -> None:
        """A listed item the rules leave out: no metadata request; the catalog marks its row EXCLUDED, if it has one."""
        self._count_excluded(part)
        self.counters.seen += 1
        if rating_key in self.etags.excluded:
            await self.writer.add_seen(rating_key)
        elif rating_key in self.etags:
            await self.writer.add_excluded(rating_key)

    def _metadata_excludes(self, meta: PlexMetadata) -> bool:
        """For an item the listing could not decide: whether its full metadata excludes it (counted if so)."""
        if self.rules is None or meta.rating_key not in self._undecided:
            return False
        keep, part = self.rules.metadata_verdict(meta, self.states, self.library.kind)
        if not keep:
            self._count_excluded(part)
        return not keep

    async def _broken_entry(self, rating_key: str, title: str, why: str, path: str) -> None:
        """A listing entry that cannot be read: skipped, counted, reported; seen if the catalog has it."""
        log.warning(
            "skipping a Plex listing entry that cannot be read",
            extra={"scan_id": self.scan_id, "rating_key": rating_key, "path": path, "error": why},
        )
        await self._item_failed(_Pending(rating_key, "", title), f"Plex listed the item malformed at {path}: {why}", 0)

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
            answer = await self.plex.metadata_page([p.rating_key for p in batch])
            metas = answer.items
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
        unreadable = dict(answer.broken)
        for p in batch:
            meta = by_key.get(p.rating_key)
            if meta is None:
                why = unreadable.get(p.rating_key)
                if why is None and answer.broken:
                    why = f"{len(answer.broken)} of its entries could not be read ({answer.broken[0][1]})"
                message = f"Plex's metadata of the item is malformed: {why}" if why else "Plex returned no metadata"
                if why:
                    log.warning("Plex metadata cannot be read", extra={"rating_key": p.rating_key, "error": why})
                await self._item_failed(p, message, 0)
                failed.add(p.rating_key)
                continue
            try:
                self.writer.build_item(self._converter(meta, p.etag, excluded=self._metadata_excludes(meta)))
            except Exception as exc:  # a malformed entry must not stop the scan
                log.warning("could not convert Plex item", extra={"rating_key": p.rating_key}, exc_info=True)
                await self._item_failed(p, f"could not read Plex's metadata: {exc}", 0)
                failed.add(p.rating_key)
                continue
            await self.writer.flush_if_full()
        return failed

    def _converter(
        self, meta: PlexMetadata, etag: str, *, excluded: bool = False
    ) -> Callable[[Callable[..., common_pb2.Item]], common_pb2.Item]:
        def build(new: Callable[..., common_pb2.Item]) -> common_pb2.Item:
            lib = self.library
            item = to_item(meta, library_id=lib.id, library_kind=lib.kind, etag=etag, states=self.states, new=new)
            if excluded:  # left out by a rule only full metadata decides: kept EXCLUDED, under its ETag
                item.state = common_pb2.ITEM_STATE_EXCLUDED
            return item

        return build

    async def _item_failed(self, p: _Pending, message: str, status: int) -> None:
        self.counters.failed += 1
        if p.rating_key in self.etags:
            # Seen, so FinishScan does not mark it missing; its old ETag stays, so the next scan retries.
            await self.writer.add_seen(p.rating_key, unchanged=False)
        await self.on_item_error(p.rating_key, p.title, message, status)

    # ------------------------------------------------------------------ shows
    async def _scan_shows(self) -> None:
        """Shows in three section-wide listings instead of two listings per show.

        1. episodes (``type=4``, paged): each episode's ETag folds into its season's `Rollup`; unchanged
           episodes are reported seen at once, changed ones are kept as compact entries (key, season, ETag);
        2. seasons (``type=3``): each season's ETag (its entry + its episodes' roll-up) folds into its show's;
        3. shows (``type=2``): each show's ETag; then, a few shows at a time, the show, its changed seasons and
           its changed episodes are fetched and written, parents first.

        What is held: a roll-up per season and per show and the changed episodes (all of them only on a first
        or deep scan). Children whose parent no listing returned (Plex changed while we listed) are written
        when the catalog already has the parent, else left for the next scan.
        """
        key = self.library.plex_key
        ps = self.options.page_size
        counts = await asyncio.gather(
            self.plex.section_count(key, TYPE_SHOW),
            self.plex.section_count(key, TYPE_SEASON),
            self.plex.section_count(key, TYPE_EPISODE),
        )
        self.counters.total = sum(counts)
        if self.rules is not None:  # the shows' own fields first: every episode reads its show's
            self.rules, self._show_verdicts = await show_context(self.plex, key, self.rules, self.states, ps)
        season_rollups: dict[str, Rollup] = {}
        changed_episodes: dict[str, list[_Episode]] = {}
        async for _, listed in self._entries(key, TYPE_EPISODE):
            deep, claim, add_claimed = self.deep, self.etags.claim_unchanged, self.writer.add_claimed  # per page
            excluded = self.etags.excluded  # EXCLUDED in the catalog and kept now: fetched back
            for rating_key, parent, title, etag in listed:
                rollup = season_rollups.get(parent)
                if rollup is None:
                    rollup = season_rollups[parent] = Rollup()
                rollup.add(rating_key, etag)
                if not deep and not (excluded and rating_key in excluded) and claim(rating_key, etag):
                    if add_claimed(rating_key):
                        await self.writer.flush()
                else:
                    changed_episodes.setdefault(parent, []).append(_Episode(rating_key, parent, etag, title))
            self.counters.seen += len(listed)
        kept_seasons = set(season_rollups)  # seasons with a kept episode
        show_rollups: dict[str, Rollup] = {}
        seasons_of: dict[str, list[_Pending]] = {}
        async for page in self.plex.section_entries(key, TYPE_SEASON, page_size=ps):
            for entry in page.entries:
                self.counters.seen += 1
                try:
                    check_entry(entry)
                    season_key, show_key = read_str(entry, "ratingKey"), read_str(entry, "parentRatingKey")
                    etag = self._etag(entry, season_rollups.get(season_key) or Rollup())
                except PlexParseError as exc:
                    await self._broken_raw(entry, str(exc), key)
                    continue
                season_rollups.pop(season_key, None)
                show_rollups.setdefault(show_key, Rollup()).add(season_key, etag)
                seasons_of.setdefault(show_key, []).append(_Pending(season_key, etag, read_str(entry, "title")))
        del season_rollups
        self.phase = "fetching"
        show_slots = asyncio.Semaphore(self.options.concurrency)
        async with task_group() as tg:
            async for page in self.plex.section_entries(key, TYPE_SHOW, page_size=ps):
                for entry in page.entries:
                    self.counters.seen += 1
                    try:
                        check_entry(entry)
                        show_key = read_str(entry, "ratingKey")
                        show = _Pending(
                            show_key,
                            self._etag(entry, show_rollups.get(show_key) or Rollup()),
                            read_str(entry, "title"),
                        )
                    except PlexParseError as exc:
                        await self._broken_raw(entry, str(exc), key)
                        continue
                    show_rollups.pop(show_key, None)
                    seasons = seasons_of.pop(show_key, [])
                    episodes = {s.rating_key: changed_episodes.pop(s.rating_key, []) for s in seasons}
                    if self.rules is not None:
                        flags = {
                            s.rating_key: (s.rating_key in kept_seasons, s.rating_key in self._excluded_parents)
                            for s in seasons
                        }
                        own = self._show_verdicts.get(show_key, (None, -1))
                        show_rule, season_rules = follow(self.rules, own, flags)
                        if show_rule is not None:  # the show and everything below it (no kept episode)
                            await self._exclude_parent(show_key, show_rule)
                            for s in seasons:
                                await self._exclude_parent(s.rating_key, season_rules[s.rating_key])
                            continue
                        for season_key, name in season_rules.items():
                            await self._exclude_parent(season_key, name)
                        seasons = [s for s in seasons if s.rating_key not in season_rules]
                    await show_slots.acquire()
                    tg.create_task(self._write_show_slot(show, seasons, episodes, show_slots))
        # Children whose parent no listing returned: written under a parent the catalog has, else next scan.
        for show_key, seasons in seasons_of.items():
            episodes = {s.rating_key: changed_episodes.pop(s.rating_key, []) for s in seasons}
            await self._write_show(None if show_key in self.etags else show_key, seasons, episodes, "")
        for season_key, eps in changed_episodes.items():
            if season_key in self.etags:
                await self._write_episodes(eps)
            else:
                await self._skip_children([], eps, "")

    async def _broken_raw(self, entry: Raw, why: str, section_key: str) -> None:
        title = entry.get("title")
        path = f"/library/sections/{section_key}/all"
        await self._broken_entry(entry_key(entry), title[:200] if isinstance(title, str) else "", why, path)

    async def _write_show_slot(
        self, show: _Pending, seasons: list[_Pending], episodes: dict[str, list[_Episode]], slots: asyncio.Semaphore
    ) -> None:
        try:
            await self._write_show(show, seasons, episodes, show.title)
        finally:
            slots.release()

    async def _write_show(
        self,
        show: _Pending | str | None,
        seasons: list[_Pending],
        episodes: dict[str, list[_Episode]],
        show_title: str,
    ) -> None:
        """One show's subtree, parents first. ``show`` is the show's entry, or (no entry listed) None when the
        catalog has the show, or its rating key when it does not (its children then wait for the next scan)."""
        if isinstance(show, str):
            await self._skip_children(seasons, [ep for eps in episodes.values() for ep in eps], show_title)
            return
        if show is not None:
            if self._changed(show.rating_key, show.etag):
                failed = await self._fetch_and_write([show])
                if failed and show.rating_key not in self.etags:
                    await self._skip_children(seasons, [ep for eps in episodes.values() for ep in eps], show_title)
                    return
            else:
                await self.writer.add_seen(show.rating_key)
        changed_seasons: list[_Pending] = []
        for s in seasons:
            if self._changed(s.rating_key, s.etag):
                changed_seasons.append(s)
            else:
                await self.writer.add_seen(s.rating_key)
        failed_seasons: set[str] = set()
        for chunk in _chunks(changed_seasons, self.options.metadata_batch):
            failed_seasons |= await self._fetch_and_write(chunk)
        blocked = {rk for rk in failed_seasons if rk not in self.etags}
        ready: list[_Episode] = []
        for season_key, eps in episodes.items():
            if season_key in blocked:
                await self._skip_children([], eps, show_title)
            else:
                ready.extend(eps)
        await self._write_episodes(ready)

    async def _write_episodes(self, episodes: list[_Episode]) -> None:
        pending = [_Pending(ep.rating_key, ep.etag, ep.title) for ep in episodes]
        if pending:
            await asyncio.gather(
                *(self._fetch_and_write(chunk) for chunk in _chunks(pending, self.options.metadata_batch))
            )

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

    # ------------------------------------------------------------------ items not listed
    async def _verify_unseen(self) -> None:
        """Ask Plex about every item the catalog has that no listing returned, before FinishScan.

        Offset paging skips an entry when Plex removes or adds items before the current page while the scan
        pages, and FinishScan would mark such a skipped, present item FILE_NOT_FOUND. So the candidates
        (catalog keys not seen) are fetched with the batched full-metadata request: those Plex returns (in
        this library) are present and written; those it does not return (404 / omitted) are gone and stay
        unseen for FinishScan. An item that cannot be verified (errors after retries) counts as seen.
        """
        candidates = self.etags.unseen()
        if not candidates:
            return
        self.phase = "verifying"
        log.info("verifying items no listing returned", extra={"scan_id": self.scan_id, "count": len(candidates)})
        size = self.options.metadata_batch
        async with task_group() as tg:
            for i in range(0, len(candidates), size):
                assert self._fetch_slots is not None
                await self._fetch_slots.acquire()
                tg.create_task(self._verify_slot(candidates[i : i + size]))

    async def _verify_slot(self, keys: list[str]) -> None:
        try:
            await self._verify(keys)
        finally:
            assert self._fetch_slots is not None
            self._fetch_slots.release()

    async def _verify(self, keys: list[str]) -> None:
        try:
            answer = await self.plex.metadata_page(keys)
            metas = answer.items
        except PlexUnauthorizedError:
            raise
        except PlexError as exc:
            if len(keys) > 1:  # a multi-id request fails as a whole: one by one
                for rk in keys:
                    await self._verify([rk])
            elif not isinstance(exc, PlexNotFoundError):
                log.warning("could not verify an item no listing returned", extra={"rating_key": keys[0]})
                await self.writer.add_seen(keys[0], unchanged=False)  # unknown: never mark missing on a doubt
            return
        if answer.broken:
            # Present but unreadable (or, without a rating key, any of them may be): never marked missing on a doubt.
            unreadable = {rk for rk, _ in answer.broken}
            returned = {m.rating_key for m in metas}
            for rk in keys:
                if rk in unreadable or ("" in unreadable and rk not in returned):
                    log.warning("could not read an item no listing returned", extra={"rating_key": rk})
                    await self.writer.add_seen(rk, unchanged=False)
        section = self.library.plex_key
        for meta in metas:
            if meta.rating_key not in keys or (meta.library_section_id and meta.library_section_id != section):
                continue
            self.counters.seen += 1
            etag = item_etag(meta, local=local_signature(meta, self.states))
            try:
                item = to_item(
                    meta, library_id=self.library.id, library_kind=self.library.kind, etag=etag, states=self.states
                )
            except Exception as exc:
                log.warning("could not convert Plex item", extra={"rating_key": meta.rating_key}, exc_info=True)
                await self._item_failed(_Pending(meta.rating_key, "", meta.title), f"could not read: {exc}", 0)
                continue
            if self.rules is not None and self.rules.shows is None:
                # no listing said anything about it: the rules decide on its metadata (in a show library, the
                # next scan's listings decide, since an episode reads its show's fields)
                keep, part = self.rules.metadata_verdict(meta, self.states, self.library.kind)
                if not keep:
                    self._count_excluded(part)
                    item.state = common_pb2.ITEM_STATE_EXCLUDED
            self.counters.fetched += 1
            await self.writer.add_item(item)

    # ------------------------------------------------------------------ collections
    async def _scan_collections(self) -> None:
        """Every collection with its members. One that cannot be read or listed fails the scan: a collection a
        completed scan did not write is deleted by FinishScan."""
        key = self.library.plex_key
        ps = self.options.page_size
        async for page in self.plex.section_items(key, TYPE_COLLECTION, page_size=ps):
            if page.broken:
                rating_key, why = page.broken[0]
                raise PlexMalformedError(
                    f"Plex listed collection {rating_key or '(no ratingKey)'} malformed at "
                    f"/library/sections/{key}/all: {why}",
                    path=f"/library/sections/{key}/all",
                )
            metas = page.items

            async def one(c: PlexMetadata) -> None:
                members: list[str] = []
                try:
                    async for listing in self.plex.collection_children(c.rating_key, page_size=ps):
                        if listing.broken:
                            raise PlexMalformedError(
                                f"Plex listed a member of collection {c.rating_key} malformed: {listing.broken[0][1]}",
                                path=f"/library/collections/{c.rating_key}/children",
                            )
                        members.extend(m.rating_key for m in listing.items)
                except PlexNotFoundError as exc:  # gone since it was listed
                    await self.on_item_error(c.rating_key, c.title, f"could not list the collection: {exc}", exc.status)
                    self.counters.failed += 1
                    return
                h = hashlib.sha1("\x1f".join([*listing_fingerprint(c), *members]).encode(), usedforsecurity=False)
                coll = to_collection(c, library_id=self.library.id, etag=h.hexdigest(), members=members)
                await self.writer.add_collection(coll)

            await asyncio.gather(*(one(c) for c in metas))


class _PhaseTimer:
    """Wall-clock seconds of a scan's phases, for the scan span and the log."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now

    def rounded(self) -> dict[str, float]:
        return {f"{k}_seconds": round(v, 3) for k, v in self.laps.items()}


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
