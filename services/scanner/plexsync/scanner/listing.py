"""Listing pages turned into compact entries (rating key, parent, title, ETag), on two cores.

An incremental scan reads every listing entry of a library and fetches almost none: its cost is decoding
the pages and computing each entry's ETag (`etag.raw_item_etag`), pure CPU in one process. `ListingPool`
runs that for two of every three pages in a worker process (spawned once per scanner, shared by its scans) while
the scanner decodes the third itself (it also receives every page and handles every entry), so a listing uses
both cores of a small machine. Without a pool
(unit tests, or a worker that broke) everything runs in-process with the same results.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from plexsync.common.workers import worker_pool
from plexsync.scanner.convert import raw_local_signature
from plexsync.scanner.etag import raw_item_etag
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_models import (
    PlexParseError,
    check_entry,
    entry_key,
    parse_container,
    plausible_total,
    read_int,
    read_list,
    read_opt_int,
    read_str,
)
from plexsync.scanner.rules.evaluate import SyncRules

log = logging.getLogger(__name__)


# (rating key, parent rating key, title, ETag): plain tuples of str, which cross the process boundary cheaply
Entry = tuple[str, str, str, str]


@dataclass(slots=True)
class PageDigest:
    """One decoded listing page: ``totalSize`` (None when the body did not say, or said something impossible),
    offset, entries, and the entries that could not be read as (rating key or "", title, why)."""

    total_size: int | None
    offset: int
    entries: list[Entry]
    broken: list[Entry] = field(default_factory=list)
    listed: int = 0  # entries on the page, broken ones included (a short page ends a listing)
    # With sync rules: entries the listing excludes, as (rating key, title, index of the rule part, parent rating
    # key), not in ``entries``; and the rating keys of entries it cannot decide (their ETag is bound to the rule too).
    excluded: list[tuple[str, str, int, str]] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)


def digest_page(
    body: bytes, content_type: str, states: FileStates, rules: SyncRules | None = None, library_kind: int = 0
) -> PageDigest:
    """Decode a listing page and compute every entry's ETag (raises `PlexParseError` on a broken body; an entry
    that cannot be read goes to ``broken``, the others are unaffected). With ``rules``, each entry is also checked
    against them here, before any metadata request (see `SyncRules.listing_verdict`)."""
    container = parse_container(body, content_type)
    entries: list[Entry] = []
    broken: list[Entry] = []
    excluded: list[tuple[str, str, int, str]] = []
    undecided: list[str] = []
    raw = read_list(container, "Metadata")
    for e in raw:
        try:
            check_entry(e)
            rating_key = read_str(e, "ratingKey")
            etag = raw_item_etag(e, local=raw_local_signature(e, states))
            if rules is not None:
                keep, part = rules.listing_verdict(e, states, library_kind)
                if keep is False:
                    excluded.append((rating_key, read_str(e, "title"), part, read_str(e, "parentRatingKey")))
                    continue
                if keep is None:
                    undecided.append(rating_key)
                    etag = rules.undecided_etag(etag)
            entries.append((rating_key, read_str(e, "parentRatingKey"), read_str(e, "title"), etag))
        except PlexParseError as exc:
            title = e.get("title")
            broken.append((entry_key(e), "", title[:200] if isinstance(title, str) else "", str(exc)))
    try:
        total, offset = plausible_total(read_opt_int(container, "totalSize")), read_int(container, "offset")
    except PlexParseError:
        total, offset = None, 0
    return PageDigest(total, offset, entries, broken, len(raw), excluded, undecided)


@functools.lru_cache(maxsize=16)
def _states(rules: tuple[tuple[str, str], ...], remote_streaming: bool) -> FileStates:
    return FileStates(PathMapper(rules), remote_streaming=remote_streaming)


def _digest_in_worker(
    body: bytes,
    content_type: str,
    rules: tuple[tuple[str, str], ...],
    remote_streaming: bool,
    sync_rules: SyncRules | None,
    library_kind: int,
) -> PageDigest:
    return digest_page(body, content_type, _states(rules, remote_streaming), sync_rules, library_kind)


def _warm_up() -> None:
    """Imported and ready before the first page (a spawned worker starts from nothing); like the scanner, the
    worker freezes its start-up heap for the cyclic GC and collects young objects less often."""
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


class ListingPool:
    """One worker process for listing pages; `digest` falls back to in-process when it is unavailable."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self._pool is None:
            self._pool = worker_pool(1)
            await asyncio.get_running_loop().run_in_executor(self._pool, _warm_up)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def usable(self, states: FileStates) -> bool:
        return self._pool is not None and states.portable

    async def digest(
        self,
        body: bytes,
        content_type: str,
        states: FileStates,
        sync_rules: SyncRules | None = None,
        library_kind: int = 0,
    ) -> PageDigest:
        pool = self._pool
        if pool is not None and states.portable:
            rules = tuple(states.mapper.rules)
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    pool,
                    _digest_in_worker,
                    body,
                    content_type,
                    rules,
                    states.remote_streaming,
                    sync_rules,
                    library_kind,
                )
            except BrokenProcessPool:
                log.warning("listing worker broke; starting a new one")
                self._pool = None
                await self.start()
        return digest_page(body, content_type, states, sync_rules, library_kind)
