"""WriteItems and FinishScan: set-based upserts and diffs, one transaction per batch.

Per batch (under a per-library transaction advisory lock, so batches and FinishScan of one library never
interleave): look up stored (id, content hash, state, missing) of the batch's rating keys in one query;
items whose hash and state match are only recorded as seen; new items are inserted; changed items are
updated and each of their relationship tables is diffed with one DELETE (rows whose natural key is gone) and
one upsert (`ON CONFLICT ... DO UPDATE ... WHERE row IS DISTINCT FROM`) so unchanged relationship rows are
never rewritten. What the classification found (added, updated, restored; FinishScan and MarkItemsMissing:
missing) is logged for WatchChanges by one INSERT as the transaction's last statement (see `changes`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import orjson
import psycopg
from plexsync.catalog import bulk, changes, ingest
from plexsync.catalog.bulk import Payloads
from plexsync.catalog.changes import ChangeLog, Pending
from plexsync.catalog.ingest import Incoming, Rows
from plexsync.catalog.models import SEEN_COLLECTION, SEEN_ITEM
from plexsync.catalog.store import Column, Store, copy_text, delete_missing_sql, insert_sql, transpose
from plexsync.common.errors import (
    AbortedError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from plexsync.common.metrics import METRICS
from plexsync.common.workers import worker_pool
from plexsync.v1 import catalog_pb2, common_pb2

log = logging.getLogger(__name__)

FNF = common_pb2.ITEM_STATE_FILE_NOT_FOUND

ITEM_COLS: list[Column] = [
    ("id", "uuid"), ("library_id", "uuid"), ("kind", "int2"), ("rating_key", "text"), ("parent_rating_key", "text"),
    ("etag", "text"), ("state", "int2"), ("content_hash", "bytea"), ("title", "text"), ("sort_title", "text"),
    ("original_title", "text"), ("plot", "text"), ("tagline", "text"), ("year", "int4"), ("release_date", "date"),
    ("content_rating", "text"), ("index", "int4"), ("parent_index", "int4"), ("duration_ms", "int8"),
    ("rating", "float8"), ("audience_rating", "float8"), ("child_count", "int4"), ("leaf_count", "int4"),
    ("plex_guid", "text"), ("plex_added_at", "timestamptz"), ("plex_updated_at", "timestamptz"),
    ("search_title", "text"), ("search_vector", "tsvector"), ("genres", "text[]"), ("studios", "text[]"),
    ("labels", "text[]"), ("countries", "text[]"), ("networks", "text[]"), ("guids", "jsonb"), ("artwork", "jsonb"),
]  # fmt: skip
CREDIT_COLS: list[Column] = [
    ("item_id", "uuid"), ("role", "int2"), ("person_id", "int8"), ("position", "int4"), ("character", "text"),
    ("thumb_url", "text"),
]  # fmt: skip
VERSION_COLS: list[Column] = [
    ("item_id", "uuid"), ("plex_media_id", "int8"), ("position", "int4"), ("duration_ms", "int8"),
    ("bitrate", "int8"), ("width", "int4"), ("height", "int4"), ("aspect_ratio", "float8"),
    ("audio_channels", "int4"), ("audio_codec", "text"), ("video_codec", "text"), ("video_resolution", "text"),
    ("container", "text"), ("video_frame_rate", "text"), ("video_profile", "text"),
]  # fmt: skip
PART_COLS: list[Column] = [
    ("item_id", "uuid"), ("plex_media_id", "int8"), ("plex_part_id", "int8"), ("position", "int4"),
    ("plex_key", "text"), ("plex_path", "text"), ("local_path", "text"), ("size_bytes", "int8"),
    ("duration_ms", "int8"), ("container", "text"), ("video_profile", "text"), ("audio_profile", "text"),
    ("state", "int2"),
]  # fmt: skip
STREAM_COLS: list[Column] = [
    ("item_id", "uuid"), ("plex_media_id", "int8"), ("plex_part_id", "int8"), ("plex_stream_id", "int8"),
    ("position", "int4"), ("kind", "int2"), ("index", "int4"), ("codec", "text"), ("language", "text"),
    ("language_code", "text"), ("title", "text"), ("display_title", "text"), ("is_default", "bool"),
    ("forced", "bool"), ("width", "int4"), ("height", "int4"), ("channels", "int4"), ("bitrate", "int8"),
    ("profile", "text"), ("frame_rate", "text"), ("audio_channel_layout", "text"), ("external_key", "text"),
]  # fmt: skip
CHAPTER_COLS: list[Column] = [
    ("item_id", "uuid"), ("index", "int4"), ("title", "text"), ("start_ms", "int8"), ("end_ms", "int8"),
]  # fmt: skip

# (table, columns, natural key (prefix of columns), Rows attribute); parents before children.
CHILD_TABLES: list[tuple[str, list[Column], int, str]] = [
    ("credits", CREDIT_COLS, 3, "credits"),
    ("media_versions", VERSION_COLS, 2, "versions"),
    ("media_parts", PART_COLS, 3, "parts"),
    ("media_streams", STREAM_COLS, 4, "streams"),
    ("chapters", CHAPTER_COLS, 2, "chapters"),
]

# Tables whose COPY text is built before the transaction (credits wait for their person ids).
COPY_TABLES: list[tuple[str, list[Column], str]] = [("items", ITEM_COLS, "items")] + [
    (table, cols, attr) for table, cols, _, attr in CHILD_TABLES if attr != "credits"
]

# Array, JSON and tsvector columns travel as their literals (an array of arrays cannot be unnested into rows).
_ITEM_UPDATE = (
    "UPDATE items SET "
    + ", ".join(f'"{c}" = u."{c}"' + (f"::{t}" if t in bulk.LITERAL_TYPES else "") for c, t in ITEM_COLS[1:])
    + ", missing_since = NULL, updated_at = now(), last_seen_at = now() FROM unnest("
    + ", ".join(f"%b::{'text' if t in bulk.LITERAL_TYPES else t}[]" for _, t in ITEM_COLS)
    + ") AS u("
    + ", ".join(f'"{c}"' for c, _ in ITEM_COLS)
    + ") WHERE items.id = u.id"
)
_CHILD_UPSERT = {
    table: insert_sql(table, cols, conflict=[c for c, _ in cols[:nkey]]) for table, cols, nkey, _ in CHILD_TABLES
}
_CHILD_DELETE = {table: delete_missing_sql(table, cols[:nkey]) for table, cols, nkey, _ in CHILD_TABLES}

_RESTORE_MISSING = (
    "UPDATE items SET missing_since = NULL, updated_at = now(), last_seen_at = now() "
    "WHERE library_id = %s AND rating_key = ANY(%s::text[]) AND missing_since IS NOT NULL "
    "RETURNING id, rating_key, kind, state, title"
)
# Items a scan saw but its library's sync rules leave out (decided on the listing): EXCLUDED, not rewritten.
_MARK_EXCLUDED = (
    f"UPDATE items SET state = {common_pb2.ITEM_STATE_EXCLUDED}, missing_since = NULL, updated_at = now(), "
    "last_seen_at = now() WHERE library_id = %s AND rating_key = ANY(%s::text[]) "
    f"AND (state <> {common_pb2.ITEM_STATE_EXCLUDED} OR missing_since IS NOT NULL) "
    "RETURNING id, rating_key, kind, state, title"
)
# What marks an item FILE_NOT_FOUND (FinishScan and MarkItemsMissing); RETURNING rows for the change log.
_MARK_MISSING_SET = "missing_since = now(), updated_at = now()"
_MISSING_RETURNING = "RETURNING i.id, i.rating_key, i.kind, i.state, i.title"
# A library with prune_excluded: FinishScan deletes its EXCLUDED items and everything below them (children by
# parent_id, or by parent rating key while parent_id is unset), then their relationship rows (no FOREIGN KEY).
_PRUNE_EXCLUDED = (
    "WITH RECURSIVE doomed AS ("
    f"SELECT id, rating_key FROM items WHERE library_id = %(lib)s AND state = {common_pb2.ITEM_STATE_EXCLUDED} "
    "UNION SELECT c.id, c.rating_key FROM items c JOIN doomed d "
    "ON c.parent_id = d.id OR (c.parent_id IS NULL AND c.parent_rating_key = d.rating_key) "
    "WHERE c.library_id = %(lib)s) "
    "DELETE FROM items i USING doomed WHERE i.id = doomed.id " + _MISSING_RETURNING
)
_PRUNE_RELATED = tuple(
    f"DELETE FROM {table} WHERE item_id = ANY(%s::uuid[])"
    for table in ("credits", "media_streams", "media_parts", "media_versions", "chapters")
)
MAX_MISSING_KEYS = 1000

_COLLECTION_COLS: list[Column] = [
    ("id", "uuid"), ("library_id", "uuid"), ("rating_key", "text"), ("title", "text"), ("sort_title", "text"),
    ("summary", "text"), ("smart", "bool"), ("child_count", "int4"), ("etag", "text"), ("artwork", "jsonb"),
    ("plex_added_at", "timestamptz"), ("plex_updated_at", "timestamptz"), ("content_hash", "bytea"),
]  # fmt: skip
_COLLECTION_UPSERT = (
    insert_sql("collections", _COLLECTION_COLS, conflict=["library_id", "rating_key"]).replace(
        "DO UPDATE SET ", "DO UPDATE SET updated_at = now(), "
    )
).replace(', "id" = EXCLUDED."id"', "")
_MEMBER_COLS: list[Column] = [("collection_id", "uuid"), ("position", "int4"), ("rating_key", "text")]
_MEMBER_UPSERT = insert_sql("collection_members", _MEMBER_COLS, conflict=["collection_id", "position"])


def lock_key(library_id: uuid.UUID) -> int:
    """Advisory-lock key of a library's writes (signed 64 bits of the UUID)."""
    return int.from_bytes(library_id.bytes[:8], "big", signed=True)


SPECULATE_MIN_ITEMS = 50  # smaller batches are flattened in-process (not worth a round trip to the worker)
READ_AHEAD = 2  # batches read, hashed and flattened ahead of the one being written
MAX_CONFLICT_RETRIES = 3  # writes of a batch that conflicted with another writer, before ABORTED
# What another writer of the same library can make a batch fail with (and its metric label); the batch is then
# written again.
CONFLICTS: dict[type[Exception], str] = {
    psycopg.errors.UniqueViolation: "unique_violation",
    psycopg.errors.DeadlockDetected: "deadlock",
    psycopg.errors.LockNotAvailable: "lock_timeout",
}


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector around CPU-only bulk work.

    Flattening a batch allocates tens of thousands of short-lived tuples without reference cycles (freed by
    reference counting); each allocation burst would trigger collections that traverse the whole heap and
    cost as much as the work itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _speculate_in_worker(
    chunks: list[bytes],
    ids: list[str],
    states: list[int],
    digests: list[bytes],
    library_id: uuid.UUID,
    new_people: list[tuple[str, int, int]],
) -> Payloads | None:
    with no_gc():
        return bulk.speculate(chunks, ids, states, digests, library_id, COPY_TABLES, new_people)


@dataclass
class Prepared:
    """A batch after the CPU-only work: parsed ids, hashed items, optional speculative COPY payloads."""

    request: catalog_pb2.WriteItemsRequest
    library_id: uuid.UUID
    scan_id: uuid.UUID | None
    incoming: list[Incoming]
    collections: list[ingest.CollectionIn]
    speculative: asyncio.Future[Payloads | None] | None = None  # COPY payloads, being built by a worker
    speculative_ids: list[str] | None = None  # the ids of its items, if new, as sent to the worker
    conflicts: int = 0  # times it was rolled back because another writer got in the way

    @cached_property
    def keys(self) -> frozenset[str]:
        """The rating keys this batch writes or marks as seen."""
        return frozenset(
            [
                *(inc.item.rating_key for inc in self.incoming),
                *self.request.seen_rating_keys,
                *self.request.excluded_rating_keys,
            ]
        )


@dataclass
class Turn:
    """How a batch lets the one pipelined behind it go on (see `Writer.write_prepared`)."""

    people_written: asyncio.Event = field(default_factory=asyncio.Event)
    committed: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class _InFlight:
    """A batch whose transaction is open."""

    prep: Prepared
    task: asyncio.Task[BatchResult]
    turn: Turn

    def disjoint(self, other: Prepared) -> bool:
        """True when `other` shares no rating key (items or seen keys) with this batch's library keys."""
        if other.library_id != self.prep.library_id:
            return True
        return self.prep.keys.isdisjoint(other.keys)


class _Abandoned(Exception):
    """The batch before a pipelined one failed: the pipelined one is rolled back with it."""


async def _cancel_all(tasks: list[asyncio.Task[BatchResult]]) -> None:
    """Cancel the tasks and wait until each has ended (its transaction rolled back)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class BatchResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    restored: int = 0
    changes: list[common_pb2.ItemChange] = field(default_factory=list)  # for batches without a scan only
    seen_rows: int = 0  # scan_seen rows the batch inserted (see `_confirm_durable`)


class PeopleCache:
    """(name, Plex tag id) -> people.id for people committed to the database (never rolled back), and those
    committed since they were last sent to the ingest worker (which completes credit lines with them)."""

    def __init__(self, limit: int = bulk.KNOWN_PEOPLE_LIMIT, *, for_worker: bool = True) -> None:
        self.ids: dict[tuple[str, int], int] = {}
        self.limit = limit
        self.for_worker = for_worker  # without a worker there is nobody to send people to
        self.unsent: list[tuple[str, int, int]] = []

    def merge(self, found: dict[tuple[str, int], int]) -> None:
        if len(self.ids) + len(found) > self.limit:
            self.ids.clear()
        self.ids.update(found)
        if not self.for_worker:
            return
        if len(self.unsent) + len(found) > self.limit:  # no worker took them for that long: start again
            self.unsent.clear()
        self.unsent.extend((name, tag, person_id) for (name, tag), person_id in found.items())

    def take_unsent(self) -> list[tuple[str, int, int]]:
        unsent, self.unsent = self.unsent, []
        return unsent

    def resend_all(self) -> None:
        """A new worker knows nobody: send it every cached person with the next batch."""
        if self.for_worker:
            self.unsent = [(name, tag, person_id) for (name, tag), person_id in self.ids.items()]


class Writer:
    """WriteItems and FinishScan.

    With `workers` > 0, the CPU work of the *next* batch of a stream (flattening every item as if new,
    checking it and formatting its COPY text) runs in a process pool while PostgreSQL writes the current
    batch, so the service uses a second core; `start()` spawns the pool, `close()` stops it. With 0 (or if the
    pool breaks) everything runs in-process, with the same results.
    """

    def __init__(
        self,
        store: Store,
        changelog: ChangeLog | None = None,
        *,
        max_batch_items: int = 10_000,
        workers: int = 0,
        pipeline: int = 2,
        pipeline_min_items: int = 500,
        row_lock_timeout_ms: int = 5000,
    ) -> None:
        self.store = store
        self.changelog = changelog or ChangeLog(store)  # (builds the ItemChange messages of WriteItems)
        self.max_batch_items = max_batch_items
        self.people = PeopleCache(for_worker=workers > 0)
        self.workers = workers
        self.pipeline = pipeline  # transactions of one stream open at once
        self.pipeline_min_items = pipeline_min_items  # smaller batches wait for the one before (see write_stream)
        self.row_lock_timeout = f"{row_lock_timeout_ms}ms"  # see _lock_library
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self.workers and self._pool is None:
            self._pool = worker_pool(self.workers)
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self._pool, bulk.warm_up) for _ in range(self.workers)))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _speculate(self, prepared: Prepared, ids: list[str] | None = None) -> None:
        """Start building COPY payloads of every item of the batch as if all were new, in the worker pool."""
        pool = self._pool
        if pool is None:
            return
        ids = ids or ingest.uuid7_texts(len(prepared.incoming))
        args = (
            [
                ingest.frame_items([inc.wire for inc in prepared.incoming[k : k + bulk.SPECULATE_CHUNK]])
                for k in range(0, len(prepared.incoming), bulk.SPECULATE_CHUNK)
            ],
            ids,
            [inc.state for inc in prepared.incoming],
            [inc.digest for inc in prepared.incoming],
            prepared.library_id,
            # With several workers each learns the people sent with its own batches; a credit of a person
            # its worker does not know is completed here instead.
            self.people.take_unsent(),
        )
        try:
            future = asyncio.get_running_loop().run_in_executor(pool, _speculate_in_worker, *args)
        except (BrokenProcessPool, RuntimeError):  # broken or shut down: this batch runs in-process
            log.warning("ingest worker pool unavailable; flattening in-process")
            self.people.resend_all()
            return
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # results that are never awaited
        prepared.speculative = future
        prepared.speculative_ids = ids

    async def _speculation(self, prep: Prepared) -> Payloads | None:
        """The payloads the worker built for `prep` (None when it found violations or failed)."""
        if prep.speculative is None or prep.speculative.cancelled():
            return None
        try:
            # Shielded: a batch rolled back after a conflict is written again later with the same payloads, so
            # cancelling its task must not cancel them.
            return await asyncio.shield(prep.speculative)
        except BrokenProcessPool:
            log.warning("ingest worker pool broke; starting a new one")
            self._pool = None
            self.people.resend_all()
            await self.start()
        except Exception:  # the exact in-process path still runs; never fail a batch for the optimisation
            log.exception("speculative flattening failed")
        return None

    async def write_batch(self, request: catalog_pb2.WriteItemsRequest) -> BatchResult:
        """One batch, one transaction."""
        return await self.write_prepared(await self.prepare(request))

    async def write_stream(
        self, requests: AsyncIterator[catalog_pb2.WriteItemsRequest]
    ) -> AsyncIterator[tuple[catalog_pb2.WriteItemsRequest, BatchResult]]:
        """Batches of a WriteItems stream, in order, each in its own transaction.

        Up to `READ_AHEAD` batches after the ones in the database are read and hashed ahead; while the last
        classified batch turned out mostly new or changed, each of them is also flattened speculatively, as if
        all its items were new, in the worker pool, so the worker can run ahead of the database.

        Up to `self.pipeline` transactions are open at once, so PostgreSQL COPYs one batch's new items while the
        service is still busy with the previous batch. A batch is pipelined only when `_may_pipeline` says so
        (big enough, no rating key shared with a batch in flight); everything that depends on earlier batches
        waits for their commit (see `write_prepared`), so the result is that of one batch after the other. When
        another writer of the library gets in the way (a key inserted concurrently, a deadlock, a row lock
        waited for too long), the batches from the one that failed on are rolled back and written again, in
        order.
        """
        iterator = aiter(requests)
        ahead: deque[asyncio.Task[Prepared | None]] = deque()
        speculating = False  # the last classified batch was mostly written (the first has nothing to go by)
        in_flight: deque[_InFlight] = deque()  # started transactions, oldest first
        redo: deque[Prepared] = deque()  # batches rolled back after a conflict, to start again in order
        exhausted = False
        held: Prepared | None = None  # read, waiting for a place in the pipeline
        pulling: asyncio.Task[Prepared | None] | None = None
        read_error: BaseException | None = None  # raised once every batch before it is written
        written: dict[uuid.UUID, tuple[uuid.UUID, int]] = {}  # scan -> (library, scan_seen rows committed)

        def speculate_if_worth_it(prepared: Prepared | None) -> None:
            if (
                speculating
                and prepared is not None
                and prepared.speculative is None
                and len(prepared.incoming) >= SPECULATE_MIN_ITEMS
            ):
                self._speculate(prepared)

        async def read_next(previous: asyncio.Task[Prepared | None] | None) -> Prepared | None:
            if previous is not None and await previous is None:  # reads stay in order; end of stream
                return None
            try:
                request = await anext(iterator)
            except StopAsyncIteration:
                return None
            prepared = await self.prepare(request)
            speculate_if_worth_it(prepared)
            return prepared

        def classified(mostly_written: bool) -> None:
            nonlocal speculating
            speculating = mostly_written
            for task in ahead:  # batches already read before this decision
                if task.done() and not task.cancelled() and task.exception() is None:
                    speculate_if_worth_it(task.result())

        async def pull() -> Prepared | None:
            nonlocal exhausted
            if redo:
                return redo.popleft()
            if exhausted:
                return None
            task = ahead.popleft() if ahead else asyncio.create_task(read_next(None))
            while len(ahead) < READ_AHEAD:  # keep reading while this one is awaited
                ahead.append(asyncio.create_task(read_next(ahead[-1] if ahead else task)))
            prepared = await task
            exhausted = prepared is None
            return prepared

        def take(read: asyncio.Task[Prepared | None]) -> Prepared | None:
            """The batch a finished read got; a read that failed is kept to be raised in its turn."""
            nonlocal read_error
            try:
                return read.result()
            except Exception as exc:
                read_error = exc
                return None

        def start(prep: Prepared) -> None:
            after = in_flight[-1].turn if in_flight else None
            turn = Turn()
            task = asyncio.create_task(self._write_in_turn(prep, classified, after, turn))
            in_flight.append(_InFlight(prep, task, turn))

        # The first batch is sent to the worker once classified as all new (see write_prepared), so an
        # unchanged re-send never pays for flattening. Reading the next batch and writing the ones in flight
        # are awaited together: a client may wait for an acknowledgement before it sends more.
        try:
            while True:
                if (
                    pulling is None
                    and held is None
                    and read_error is None
                    and (redo or not exhausted)
                    and len(in_flight) < self.pipeline
                ):
                    pulling = asyncio.create_task(pull())
                if pulling is not None and pulling.done():
                    held, pulling = take(pulling), None
                if held is not None and (not in_flight or self._may_pipeline(held, in_flight)):
                    start(held)
                    held = None
                    continue
                if not in_flight:
                    if pulling is not None:
                        await asyncio.wait([pulling])
                        continue
                    if read_error is not None:
                        raise read_error
                    break  # nothing read, nothing in flight: the stream is done
                flight = in_flight[0]
                if not flight.task.done():
                    waiting: list[asyncio.Future[Any]] = [flight.task, *([pulling] if pulling else [])]
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    result = flight.task.result()
                except tuple(CONFLICTS) as exc:
                    flight.prep.conflicts += 1
                    tries = flight.prep.conflicts
                    if tries >= MAX_CONFLICT_RETRIES:
                        raise AbortedError(
                            f"batch {flight.prep.request.sequence} conflicted {tries} times with concurrent "
                            "writes to its library; retry"
                        ) from exc
                    conflict = CONFLICTS.get(type(exc), "other")
                    METRICS.catalog_write_conflicts.add(1, {"plexsync.conflict": conflict})
                    log.warning(
                        "batch conflicted with a concurrent write to its library; writing it again",
                        extra={"sequence": flight.prep.request.sequence, "conflict": conflict, "attempt": tries},
                    )
                    later = [f for f in in_flight if f is not flight]
                    await _cancel_all([f.task for f in later])
                    in_flight.clear()
                    again = [flight.prep, *(f.prep for f in later), *([held] if held else [])]
                    held = None
                    if pulling is not None:  # the batch being read comes after the ones rolled back
                        await asyncio.wait([pulling])
                        pulled, pulling = take(pulling), None
                        again.extend([pulled] if pulled else [])
                    redo.extendleft(reversed(again))
                    continue
                in_flight.popleft()
                if flight.prep.scan_id is not None:
                    _, rows = written.get(flight.prep.scan_id, (flight.prep.library_id, 0))
                    written[flight.prep.scan_id] = (flight.prep.library_id, rows + result.seen_rows)
                yield flight.prep.request, result
            await self._confirm_durable(written)
        finally:
            await _cancel_all([f.task for f in in_flight])  # failed batch or caller gone: roll back the rest
            if pulling is not None:
                pulling.cancel()
            for task in ahead:  # stop reading
                if task.done():
                    task.cancelled() or task.exception()  # retrieved: a later batch's error is moot now
                else:
                    task.cancel()

    def _may_pipeline(self, prep: Prepared, in_flight: deque[_InFlight]) -> bool:
        """Whether `prep` may start while the batches `in_flight` are being written: there is room, it is big
        enough for the overlap to pay (with 200-item batches it gained nothing measurable and cost the service
        ~8% more CPU per item), and it shares no rating key with them."""
        return (
            len(in_flight) < self.pipeline
            and len(prep.incoming) >= self.pipeline_min_items
            and all(f.disjoint(prep) for f in in_flight)
        )

    async def _write_in_turn(
        self, prep: Prepared, classified: Callable[[bool], None], after: Turn | None, turn: Turn
    ) -> BatchResult:
        try:
            result = await self.write_prepared(prep, on_classified=classified, after=after, turn=turn)
        except BaseException:
            turn.people_written.set()
            if not turn.committed.done():
                turn.committed.set_result(False)
            raise
        if not turn.committed.done():
            turn.committed.set_result(True)
        return result

    async def prepare(self, request: catalog_pb2.WriteItemsRequest) -> Prepared:
        """Request checks and content hashes (flattening is started later, by `_speculate`)."""
        library_id = ingest.parse_uuid(request.library_id, "library_id")
        assert library_id is not None
        scan_id = ingest.parse_uuid(request.scan_id, "scan_id", required=False)
        with no_gc():
            incoming = ingest.prepare_batch(request, self.max_batch_items)
        collections = ingest.prepare_collections(request)
        return Prepared(request, library_id, scan_id, incoming, collections)

    async def write_prepared(
        self,
        prep: Prepared,
        *,
        on_classified: Callable[[bool], None] | None = None,
        after: Turn | None = None,
        turn: Turn | None = None,
    ) -> BatchResult:
        """One prepared batch in one transaction; `on_classified(mostly_written)` is called as soon as the
        batch's items are known to be new/changed or not (the stream then starts flattening the next one).

        Alone (`after` None), the transaction takes the library's lock first. Pipelined behind the batch whose
        `Turn` is `after`, it first classifies its items and COPYs its new ones without the lock, while that
        batch is still being written (their rating keys are disjoint, see `write_stream`); it inserts people
        only once that batch has (so neither ever waits for a row the other inserted), then waits for that
        batch to commit, takes the lock and does everything that reads or changes stored rows: its scan,
        updates of changed items, items that went missing since they were classified, parents, seen keys,
        collections. So a pipelined batch never holds a row lock the batch before it needs. `turn` is
        signalled as this batch passes the same points."""
        library_id, scan_id, incoming, collections = prep.library_id, prep.scan_id, prep.incoming, prep.collections
        request = prep.request
        result = BatchResult()
        new_people: dict[tuple[str, int], int] = {}
        logged = Pending(library_id, scan_id)
        async with self.store.cursor() as cur:
            await self._lock_library(cur, library_id, wait_for_flush=False, lock=after is None)
            if scan_id is not None and after is None:  # pipelined: in phase 2 (the batch before may add the scan)
                await self._attach_scan(cur, scan_id, library_id)
            keys = [inc.item.rating_key for inc in incoming]
            stored: dict[str, tuple[uuid.UUID, bytes, int, bool, str]] = {}
            if keys:
                await cur.execute(
                    "SELECT rating_key, id, content_hash, state, missing_since IS NOT NULL, etag FROM items "
                    "WHERE library_id = %s AND rating_key = ANY(%b::text[])",
                    (library_id, keys),
                )
                stored = {row[0]: (row[1], row[2], row[3], row[4], row[5]) for row in await cur.fetchall()}
            new: list[tuple[Incoming, str]] = []  # ids of new items are made as text (see ingest.uuid7_texts)
            changed: list[tuple[Incoming, uuid.UUID]] = []
            state_only: list[tuple[uuid.UUID, int]] = []
            unchanged: list[str] = []
            etag_only: list[tuple[uuid.UUID, str]] = []  # same content under a new etag: not a change
            speculative_ids = prep.speculative_ids  # by position in the batch
            fresh_ids = [] if speculative_ids else ingest.uuid7_texts(len(incoming) - len(stored))
            for inc in incoming:
                item = inc.item
                old = stored.get(item.rating_key)
                if old is None:
                    new_id = speculative_ids[inc.position] if speculative_ids else fresh_ids[len(new)]
                    new.append((inc, new_id))
                    logged.add(new_id, item.rating_key, item.kind, changes.ADDED, inc.state, item.title)
                    result.added += 1
                    continue
                item_id, digest, state, missing, etag = old
                if missing:
                    result.restored += 1
                    logged.add(item_id, item.rating_key, item.kind, changes.RESTORED, inc.state, item.title)
                elif digest == inc.digest and state == inc.state:
                    result.unchanged += 1
                    unchanged.append(item.rating_key)
                    if etag != item.etag:
                        etag_only.append((item_id, item.etag))
                    continue
                else:
                    result.updated += 1
                    logged.add(item_id, item.rating_key, item.kind, changes.UPDATED, inc.state, item.title)
                if digest == inc.digest:
                    state_only.append((item_id, inc.state))
                    if etag != item.etag:
                        etag_only.append((item_id, item.etag))
                else:
                    changed.append((inc, item_id))
            if on_classified is not None:
                on_classified((len(new) + len(changed) + len(state_only)) * 2 > len(incoming))
            if prep.speculative is None and len(new) == len(incoming) >= SPECULATE_MIN_ITEMS:
                self._speculate(prep, [item_id for _, item_id in new])  # all new: flatten it in the worker anyway
            speculative = await self._speculation(prep) if len(new) == len(incoming) else None
            with no_gc():
                payloads = speculative or bulk.copy_payloads(bulk.flatten_checked(new, library_id), COPY_TABLES)
                rows_changed = bulk.flatten_checked(changed, library_id)
            if after is not None:
                await after.people_written.wait()
            person_ids, new_people = await self._resolve_people(
                cur, [*payloads.people, *(r[2] for r in rows_changed.credits)]
            )
            if turn is not None:
                turn.people_written.set()
            rows_changed.credits = [(r[0], r[1], person_ids[r[2]], r[3], r[4], r[5]) for r in rows_changed.credits]
            await self._write_new(cur, payloads, person_ids)
            if after is not None:
                if not await asyncio.shield(after.committed):  # (cancelling this batch must not cancel it)
                    raise _Abandoned
                await cur.execute("SELECT set_config('lock_timeout', '0', true)")  # the library lock: wait for it
                await cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(library_id),))
                if scan_id is not None:
                    await self._attach_scan(cur, scan_id, library_id)
                if unchanged:  # gone missing since classified (another scan's FinishScan): back, as in order
                    back = await self._restore_missing(cur, library_id, unchanged)
                    logged.add_rows(back, changes.RESTORED)
                    result.restored += len(back)
                    result.unchanged -= len(back)
            await self._write_changed(cur, rows_changed, state_only, etag_only)
            await self._resolve_parents(
                cur,
                library_id,
                [inc.item.rating_key for inc, _ in new],
                [inc.item.rating_key for inc, _ in new if inc.item.parent_rating_key]
                + [r[3] for r in rows_changed.items],
            )
            if request.seen_rating_keys:
                back, existing = await self._restore_seen(cur, library_id, list(request.seen_rating_keys))
                logged.add_rows(back, changes.RESTORED)
                result.restored += len(back)
                result.unchanged += existing - len(back)
            if request.excluded_rating_keys:
                excluded = list(request.excluded_rating_keys)
                await cur.execute(_MARK_EXCLUDED, (library_id, excluded))
                logged.add_rows(await cur.fetchall(), changes.UPDATED)
            if scan_id is not None:
                result.seen_rows += await self._record_seen(
                    cur, scan_id, SEEN_ITEM, [*keys, *request.seen_rating_keys, *request.excluded_rating_keys]
                )
                if collections:
                    result.seen_rows += await self._record_seen(
                        cur, scan_id, SEEN_COLLECTION, [c.message.rating_key for c in collections]
                    )
            if collections:
                await self._write_collections(cur, library_id, collections)
            rows = await changes.log_changes(cur, logged, returning=scan_id is None, durable=scan_id is None)
        result.changes = [self.changelog.message(r) for r in rows]
        self.people.merge(new_people)
        return result

    async def _lock_library(
        self, cur: psycopg.AsyncCursor[Any], library_id: uuid.UUID, *, wait_for_flush: bool = True, lock: bool = True
    ) -> None:
        """Serialise the library's writes (unless `lock` is False: the caller takes the lock later) and check
        that the library exists. With `wait_for_flush=False` the commit does not wait for its WAL to
        reach the disk (PostgreSQL's asynchronous commit): a crash of the database may lose the last fraction
        of a second of batches, which the next scan sends again (their ETags are not in the catalog). A scan's
        stream ends with `_confirm_durable`, so no FinishScan ever relies on a lost batch."""
        if lock:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(library_id),))
        if not wait_for_flush:  # else the server's own setting (on, or remote_apply with replicas...)
            # A WriteItems transaction waits at most `row_lock_timeout` for a row another transaction is
            # inserting (the same new item or person). Without it, two writers of a library could wait for each
            # other in a cycle PostgreSQL cannot see: a pipelined batch holding a new row waits, in this
            # process, for the batch before it, which waits for the library lock held by the other writer,
            # whose COPY waits for that row. The batch that times out is rolled back and written again.
            await cur.execute(
                "SELECT set_config('synchronous_commit', 'off', true), set_config('lock_timeout', %s, true)",
                (self.row_lock_timeout,),
            )
        await cur.execute("SELECT 1 FROM libraries WHERE id = %s", (library_id,))
        if await cur.fetchone() is None:
            raise NotFoundError("library", str(library_id), resource_type="plexsync.v1.Library")

    async def _attach_scan(self, cur: psycopg.AsyncCursor[Any], scan_id: uuid.UUID, library_id: uuid.UUID) -> None:
        await cur.execute(
            "WITH ins AS (INSERT INTO scans (id, library_id) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING "
            "RETURNING library_id, finished_at) "
            "SELECT library_id, finished_at FROM ins UNION ALL SELECT library_id, finished_at FROM scans WHERE id = %s",
            (scan_id, library_id, scan_id),
        )
        row = await cur.fetchone()
        if row is None:  # inserted by a batch that committed while this statement waited: not in its snapshot
            await cur.execute("SELECT library_id, finished_at FROM scans WHERE id = %s", (scan_id,))
            row = await cur.fetchone()
        assert row is not None
        if row[0] != library_id:
            raise InvalidArgumentError.single("scan_id", "belongs to a scan of another library")
        if row[1] is not None:
            raise FailedPreconditionError(f"scan {scan_id} is finished; start a new scan with a new scan_id")

    async def _resolve_people(
        self, cur: psycopg.AsyncCursor[Any], keys: list[tuple[str, int]]
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """people.id of every (name, Plex tag id), inserting new people: (all ids, ids not cached before)."""
        cache = self.people.ids
        ids: dict[tuple[str, int], int] = {}
        missing: set[tuple[str, int]] = set()
        for key in keys:
            pid = cache.get(key)
            if pid is None:
                missing.add(key)
            else:
                ids[key] = pid
        found: dict[tuple[str, int], int] = {}
        if missing:
            ordered = sorted(missing)  # a stable order: concurrent writers lock people rows in the same order
            names = [k[0] for k in ordered]
            tags = [k[1] for k in ordered]
            await cur.execute(
                "INSERT INTO people (name, plex_tag_id) SELECT * FROM unnest(%b::text[], %b::int8[]) "
                "ON CONFLICT (name, plex_tag_id) DO NOTHING RETURNING id, name, plex_tag_id",
                (names, tags),
            )
            found = {(r[1], r[2]): r[0] for r in await cur.fetchall()}
            if len(found) < len(missing):
                await cur.execute(
                    "SELECT p.id, p.name, p.plex_tag_id FROM people p "
                    "JOIN unnest(%b::text[], %b::int8[]) AS k(name, tag) ON p.name = k.name AND p.plex_tag_id = k.tag",
                    (names, tags),
                )
                found.update({(r[1], r[2]): r[0] for r in await cur.fetchall()})
            ids.update(found)
        return ids, found

    async def _write_new(
        self, cur: psycopg.AsyncCursor[Any], payloads: Payloads, person_ids: dict[tuple[str, int], int]
    ) -> None:
        """New items and their relationship rows: one COPY (text, prepared beforehand) per table."""
        for table, cols, _ in COPY_TABLES:
            data = payloads.tables.get(table)
            if data:
                await copy_text(cur, table, cols, data)
        if payloads.credit_prefixes or payloads.credit_lines:
            by_index = [person_ids[key] for key in payloads.people]
            await copy_text(
                cur,
                "credits",
                bulk.CREDIT_COPY_COLS,
                payloads.credit_lines
                + bulk.credit_lines(payloads.credit_prefixes, map(by_index.__getitem__, payloads.credit_people)),
            )

    async def _write_changed(
        self,
        cur: psycopg.AsyncCursor[Any],
        rows_changed: Rows,
        state_only: list[tuple[uuid.UUID, int]],
        etag_only: list[tuple[uuid.UUID, str]],
    ) -> None:
        width = len(ITEM_COLS)
        if rows_changed.items:
            await cur.execute(_ITEM_UPDATE, transpose(rows_changed.items, width))
            ids = [r[0] for r in rows_changed.items]
            # Children first removed bottom-up (streams, parts, versions cascade), then upserted top-down.
            for table, _cols, nkey, attr in reversed(CHILD_TABLES):
                keys = transpose([r[:nkey] for r in getattr(rows_changed, attr)], nkey)
                await cur.execute(_CHILD_DELETE[table], [ids, *keys])
            for table, cols, _, attr in CHILD_TABLES:
                rows = getattr(rows_changed, attr)
                if rows:
                    await cur.execute(_CHILD_UPSERT[table], transpose(rows, len(cols)))
        if state_only:
            await cur.execute(
                "UPDATE items SET state = u.state, missing_since = NULL, updated_at = now(), last_seen_at = now() "
                "FROM unnest(%b::uuid[], %b::int2[]) AS u(id, state) WHERE items.id = u.id",
                transpose(state_only, 2),
            )
        if etag_only:
            await cur.execute(
                "UPDATE items SET etag = u.etag, last_seen_at = now() "
                "FROM unnest(%b::uuid[], %b::text[]) AS u(id, etag) WHERE items.id = u.id",
                transpose(etag_only, 2),
            )

    async def _resolve_parents(
        self, cur: psycopg.AsyncCursor[Any], library_id: uuid.UUID, new_keys: list[str], written: list[str]
    ) -> None:
        """Set parent_id from parent_rating_key for the written items (new ones with a parent key, and changed
        ones), and adopt earlier orphans whose parent arrived in this batch (`new_keys`)."""
        if written:
            await cur.execute(
                "UPDATE items c SET parent_id = s.pid FROM ("
                " SELECT c2.id, p.id AS pid FROM items c2 LEFT JOIN items p"
                " ON p.library_id = c2.library_id AND p.rating_key = c2.parent_rating_key"
                " WHERE c2.library_id = %s AND c2.rating_key = ANY(%s::text[])) s "
                "WHERE c.id = s.id AND c.parent_id IS DISTINCT FROM s.pid",
                (library_id, written),
            )
        if new_keys:
            await cur.execute(
                "UPDATE items c SET parent_id = p.id FROM items p "
                "WHERE c.library_id = %s AND c.parent_id IS NULL AND c.parent_rating_key <> '' "
                "AND c.parent_rating_key = ANY(%s::text[]) "
                "AND p.library_id = c.library_id AND p.rating_key = c.parent_rating_key",
                (library_id, new_keys),
            )

    async def _restore_missing(
        self, cur: psycopg.AsyncCursor[Any], library_id: uuid.UUID, keys: list[str]
    ) -> list[tuple[Any, ...]]:
        """Bring the given items back from FILE_NOT_FOUND; (id, rating key, kind, state, title) of those that were."""
        await cur.execute(_RESTORE_MISSING, (library_id, keys))
        return list(await cur.fetchall())

    async def _restore_seen(
        self, cur: psycopg.AsyncCursor[Any], library_id: uuid.UUID, keys: list[str]
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Bring seen-unchanged items back from FILE_NOT_FOUND: (the restored items' rows as `_restore_missing`
        gives them, how many of the keys exist), in one round trip."""
        await cur.execute(
            f"WITH r AS ({_RESTORE_MISSING}), n AS "
            "(SELECT count(*) AS n FROM items WHERE library_id = %s AND rating_key = ANY(%s::text[])) "
            "SELECT n.n, r.* FROM n LEFT JOIN r ON true",
            (library_id, keys, library_id, keys),
        )
        rows = await cur.fetchall()
        return [tuple(r[1:]) for r in rows if r[1] is not None], int(rows[0][0])

    async def _record_seen(
        self, cur: psycopg.AsyncCursor[Any], scan_id: uuid.UUID, entity: int, keys: list[str]
    ) -> int:
        """Record `keys` as seen by the scan; how many rows that inserted (0 or 1)."""
        if not keys:
            return 0
        await cur.execute(
            "INSERT INTO scan_seen (scan_id, entity, rating_keys) VALUES (%s, %s, %b::text[])",
            (scan_id, entity, keys),
        )
        return 1

    async def _confirm_durable(self, scans: dict[uuid.UUID, tuple[uuid.UUID, int]]) -> None:
        """At the end of a stream, before it answers OK: the scans' batches are all still there, and on disk.

        Scan batches commit asynchronously, so a crash of PostgreSQL loses the last of them although they were
        acknowledged; the pool reconnects and the stream goes on. FinishScan would then mark the lost batches'
        items FILE_NOT_FOUND though Plex has them. So every batch's `scan_seen` rows are counted here, in a
        transaction that writes (the scan's row) and commits synchronously, flushing the WAL of every batch
        before it: when this passes, FinishScan relies only on durable rows; when it fails the scanner fails
        the scan instead of finishing it."""
        for scan_id, (library_id, expected) in scans.items():
            async with self.store.cursor() as cur:
                await self._lock_library(cur, library_id)
                await cur.execute(
                    "UPDATE scans SET library_id = library_id WHERE id = %s AND finished_at IS NULL "
                    "RETURNING (SELECT count(*) FROM scan_seen WHERE scan_id = %s)",
                    (scan_id, scan_id),
                )
                row = await cur.fetchone()
                found = int(row[0]) if row else 0
            if found < expected:  # (more: rows of an earlier stream of the scan)
                log.error(
                    "acknowledged batches of a scan are gone (did the database restart?)",
                    extra={"scan_id": str(scan_id), "expected": expected, "found": found},
                )
                raise FailedPreconditionError(
                    f"the database lost {expected - found} of scan {scan_id}'s acknowledged batches (it restarted "
                    "during the scan?); do not finish this scan, start a new one"
                )

    async def _write_collections(
        self, cur: psycopg.AsyncCursor[Any], library_id: uuid.UUID, collections: list[ingest.CollectionIn]
    ) -> None:
        await cur.execute(
            "SELECT rating_key, id, content_hash FROM collections WHERE library_id = %s AND rating_key = ANY(%s)",
            (library_id, [c.message.rating_key for c in collections]),
        )
        stored = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
        rows: list[tuple[Any, ...]] = []
        members: list[tuple[Any, ...]] = []
        sizes: list[tuple[uuid.UUID, int]] = []
        for c in collections:
            m = c.message
            old = stored.get(m.rating_key)
            if old is not None and old[1] == c.digest:
                continue
            cid = old[0] if old is not None else ingest.uuid7()
            artwork = [
                {"kind": a.kind, "url": a.url, "source": a.source, "updated_at": a.updated_at.seconds or None}
                for a in m.artwork
            ]
            rows.append(
                (
                    cid, library_id, m.rating_key, m.title, m.sort_title, m.summary, m.smart, m.child_count, m.etag,
                    orjson.dumps(artwork).decode(), ingest.to_datetime(m.plex_added_at),
                    ingest.to_datetime(m.plex_updated_at), c.digest,
                )
            )  # fmt: skip
            members.extend((cid, j, key) for j, key in enumerate(m.member_rating_keys))
            sizes.append((cid, len(m.member_rating_keys)))
        if not rows:
            return
        await cur.execute(_COLLECTION_UPSERT, transpose(rows, len(_COLLECTION_COLS)))
        await cur.execute(
            "DELETE FROM collection_members m USING unnest(%s::uuid[], %s::int4[]) AS s(id, n) "
            "WHERE m.collection_id = s.id AND m.position >= s.n",
            transpose(sizes, 2),
        )
        if members:
            await cur.execute(_MEMBER_UPSERT, transpose(members, 3))

    async def finish_scan(self, request: catalog_pb2.FinishScanRequest) -> catalog_pb2.FinishScanResponse:
        library_id = ingest.parse_uuid(request.library_id, "library_id")
        scan_id = ingest.parse_uuid(request.scan_id, "scan_id")
        assert library_id is not None and scan_id is not None
        if request.mode not in common_pb2.ScanMode.values():
            raise InvalidArgumentError.single("mode", f"unknown scan mode {request.mode}")
        start: datetime | None = ingest.to_datetime(request.start_time)
        async with self.store.cursor() as cur:
            await self._lock_library(cur, library_id)
            await cur.execute(
                "INSERT INTO scans (id, library_id, mode) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (scan_id, library_id, request.mode),
            )
            await cur.execute(
                "SELECT library_id, finished_at, missing, present, collections_removed FROM scans WHERE id = %s "
                "FOR UPDATE",
                (scan_id,),
            )
            row = await cur.fetchone()
            assert row is not None
            if row[0] != library_id:
                raise InvalidArgumentError.single("scan_id", "belongs to a scan of another library")
            if row[1] is not None:  # a retried FinishScan: answer as before, change nothing
                return catalog_pb2.FinishScanResponse(missing=row[2], present=row[3], collections_removed=row[4])
            # The unseen keys are a set difference (EXCEPT: hashed or sorted, never quadratic), then looked up by
            # the unique (library_id, rating_key) index. An anti-join against the seen rows was planned as a
            # nested loop whenever the statistics of scan_seen/items were stale (always, right after a first
            # scan): 30k items x 30k seen keys took minutes.
            await cur.execute(
                "WITH lib AS (SELECT last_scan_at FROM libraries WHERE id = %(lib)s), "
                "gone AS (SELECT rating_key FROM items WHERE library_id = %(lib)s AND missing_since IS NULL "
                "EXCEPT SELECT unnest(rating_keys) FROM scan_seen WHERE scan_id = %(scan)s AND entity = 0) "
                f"UPDATE items i SET {_MARK_MISSING_SET}, "
                "last_seen_at = GREATEST(i.last_seen_at, COALESCE((SELECT last_scan_at FROM lib), i.last_seen_at)) "
                "FROM gone WHERE i.library_id = %(lib)s AND i.rating_key = gone.rating_key "
                f"AND i.missing_since IS NULL {_MISSING_RETURNING}",
                {"lib": library_id, "scan": scan_id},
            )
            logged = Pending(library_id, scan_id)
            logged.add_rows(await cur.fetchall(), changes.MISSING, FNF)
            missing = len(logged)
            await cur.execute("SELECT prune_excluded FROM libraries WHERE id = %s", (library_id,))
            prune_row = await cur.fetchone()
            if prune_row is not None and prune_row[0]:
                await cur.execute(_PRUNE_EXCLUDED, {"lib": library_id})
                pruned = await cur.fetchall()
                if pruned:
                    ids = [r[0] for r in pruned]
                    for statement in _PRUNE_RELATED:
                        await cur.execute(statement, (ids,))
                    # logged as gone (MISSING) in the state they had; one that matches again is a new item
                    logged.add_rows(pruned, changes.MISSING)
                    log.info("pruned excluded items", extra={"library_id": str(library_id), "count": len(pruned)})
            await cur.execute(
                "SELECT count(*) FROM items WHERE library_id = %s AND missing_since IS NULL", (library_id,)
            )
            present_row = await cur.fetchone()
            present = int(present_row[0]) if present_row else 0
            await cur.execute(
                "WITH gone AS (SELECT rating_key FROM collections WHERE library_id = %(lib)s "
                "EXCEPT SELECT unnest(rating_keys) FROM scan_seen WHERE scan_id = %(scan)s AND entity = 1) "
                "DELETE FROM collections c USING gone WHERE c.library_id = %(lib)s AND c.rating_key = gone.rating_key",
                {"lib": library_id, "scan": scan_id},
            )
            removed = cur.rowcount
            await cur.execute(
                "UPDATE libraries SET last_scan_at = now(), updated_at = now(), "
                "last_deep_scan_at = CASE WHEN %(deep)s THEN now() ELSE last_deep_scan_at END, "
                "last_scan_duration_ms = CASE WHEN %(start)s::timestamptz IS NULL THEN NULL "
                "ELSE (EXTRACT(EPOCH FROM now() - %(start)s::timestamptz) * 1000)::bigint END "
                "WHERE id = %(lib)s",
                {"deep": request.mode == common_pb2.SCAN_MODE_DEEP, "start": start, "lib": library_id},
            )
            await cur.execute(
                "UPDATE scans SET finished_at = now(), mode = %s, missing = %s, present = %s, collections_removed = %s "
                "WHERE id = %s",
                (request.mode, missing, present, removed, scan_id),
            )
            await cur.execute(
                "DELETE FROM scan_seen WHERE scan_id IN (SELECT id FROM scans WHERE library_id = %s)", (library_id,)
            )
            await changes.log_changes(cur, logged, returning=False)  # the last statement
        log.info(
            "scan finished",
            extra={"library_id": str(library_id), "scan_id": str(scan_id), "missing": missing, "present": present},
        )
        return catalog_pb2.FinishScanResponse(missing=missing, present=present, collections_removed=removed)

    async def mark_items_missing(
        self, request: catalog_pb2.MarkItemsMissingRequest
    ) -> tuple[int, list[common_pb2.ItemChange]]:
        """Items Plex confirmed deleted, with everything below them (a show's seasons and episodes, a season's
        episodes), become FILE_NOT_FOUND as FinishScan marks them, in one transaction with their change rows:
        (how many were newly marked, the changes logged)."""
        library_id = ingest.parse_uuid(request.library_id, "library_id")
        assert library_id is not None
        keys = list(request.rating_keys)
        if not 1 <= len(keys) <= MAX_MISSING_KEYS:
            raise InvalidArgumentError.single(
                "rating_keys", f"give 1 to {MAX_MISSING_KEYS} rating keys, got {len(keys)}"
            )
        bad = [
            FieldViolation(f"rating_keys[{i}]", f"must be 1 to {ingest.MAX_KEY} characters, without NUL")
            for i, key in enumerate(keys)
            if not key or len(key) > ingest.MAX_KEY or "\x00" in key
        ]
        if bad:
            raise InvalidArgumentError(bad)
        async with self.store.cursor() as cur:
            await self._lock_library(cur, library_id)
            await cur.execute(
                "WITH RECURSIVE gone(id) AS ("
                " SELECT id FROM items WHERE library_id = %(lib)s AND rating_key = ANY(%(keys)s::text[])"
                " UNION SELECT c.id FROM items c JOIN gone ON c.parent_id = gone.id) "
                f"UPDATE items i SET {_MARK_MISSING_SET} FROM gone "
                f"WHERE i.id = gone.id AND i.library_id = %(lib)s AND i.missing_since IS NULL {_MISSING_RETURNING}",
                {"lib": library_id, "keys": keys},
            )
            logged = Pending(library_id, None)
            logged.add_rows(await cur.fetchall(), changes.MISSING, FNF)
            rows = await changes.log_changes(cur, logged, returning=True)  # the last statement
        log.info("items marked missing", extra={"library_id": str(library_id), "missing": len(logged)})
        return len(logged), [self.changelog.message(r) for r in rows]
