"""The change log behind WatchChanges: what item writes log, resume tokens, reading in feed order, retention.

Feed order is commit order. Every transaction that changes items logs its changes as its *last* statements:
it takes the change-log transaction advisory lock (`LOG_LOCK_KEY`), then inserts its rows with
`nextval('item_changes_seq')`, then commits, which releases the lock only after the transaction is visible.
So the writer holding the lock is the only one with uncommitted sequence numbers, and they are above every
committed one: a reader that sees seq N sees every seq below it that will ever be committed (the rest were
rolled back), and may move past N without missing anything. The lock is held for one INSERT and the commit,
and nothing is waited for while it is held (no foreign keys on the log, lock_timeout 0 only for the lock
itself), so it cannot take part in a deadlock. `pg_notify` in the same transaction wakes readers on commit.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.catalog import ingest
from plexsync.catalog.store import Store
from plexsync.common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from plexsync.v1 import catalog_pb2, common_pb2

log = logging.getLogger(__name__)

CHANNEL = "plexsync_catalog_changes"
# Transaction advisory-lock keys (library write locks use the first 64 bits of a UUIDv7: these never collide
# with a real library, whose first bits are a timestamp of this century).
LOG_LOCK_KEY = 0x0C4A_7A10_6C06_0001
PRUNE_LOCK_KEY = 0x0C4A_7A10_6C06_0002
PRUNE_MAX_ROWS = 100_000  # per transaction: a long outage's backlog is pruned over several runs

FNF = common_pb2.ITEM_STATE_FILE_NOT_FOUND
ADDED = common_pb2.CHANGE_KIND_ADDED
UPDATED = common_pb2.CHANGE_KIND_UPDATED
MISSING = common_pb2.CHANGE_KIND_MISSING
RESTORED = common_pb2.CHANGE_KIND_RESTORED

_TOKEN_VERSION = b"c1"
_TOKEN_MAC_BYTES = 12

_ROW_COLS = "seq, library_id, item_id, rating_key, item_kind, kind, source, scan_id, state, title, committed_at"
_INSERT = (
    "INSERT INTO item_changes (seq, library_id, item_id, rating_key, item_kind, kind, source, scan_id, state, title, "
    "committed_at) SELECT nextval('item_changes_seq'), %s, u.item_id::uuid, u.rating_key, u.item_kind, u.kind, %s, "
    "%s, u.state, u.title, statement_timestamp() "
    "FROM unnest(%b::text[], %b::text[], %b::int2[], %b::int2[], %b::int2[], %b::text[]) "
    "AS u(item_id, rating_key, item_kind, kind, state, title)"
)
_EXPIRED = (
    "resume token expired: the changes after it are older than the change log keeps "
    "(PLEXSYNC_CATALOG_CHANGES_RETENTION_HOURS); re-read the catalog and start from now"
)


@dataclass
class Pending:
    """The changes one transaction will log, as columns (one set-based INSERT)."""

    library_id: uuid.UUID
    scan_id: uuid.UUID | None
    item_ids: list[str] = field(default_factory=list)
    rating_keys: list[str] = field(default_factory=list)
    item_kinds: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    states: list[int] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)

    @property
    def source(self) -> int:
        return common_pb2.CHANGE_SOURCE_SCAN if self.scan_id is not None else common_pb2.CHANGE_SOURCE_REALTIME

    def add(self, item_id: uuid.UUID | str, rating_key: str, item_kind: int, kind: int, state: int, title: str) -> None:
        self.item_ids.append(str(item_id))
        self.rating_keys.append(rating_key)
        self.item_kinds.append(item_kind)
        self.kinds.append(kind)
        self.states.append(state)
        self.titles.append(title)

    def add_rows(self, rows: Sequence[Sequence[Any]], kind: int, state: int | None = None) -> None:
        """Rows of (id, rating_key, item kind, state, title), as RETURNING gives them."""
        for r in rows:
            self.add(r[0], r[1], r[2], kind, r[3] if state is None else state, r[4])

    def __len__(self) -> int:
        return len(self.item_ids)


async def log_changes(
    cur: psycopg.AsyncCursor[Any], pending: Pending, *, returning: bool, durable: bool = False
) -> list[tuple[Any, ...]]:
    """Log the transaction's changes; call it as the last statement before COMMIT (see the module docstring).

    With `returning`, the logged rows (for WriteItemsResponse.changes and MarkItemsMissingResponse). With
    `durable`, the commit waits for its WAL flush even where the transaction chose asynchronous commit: a
    resume token handed out must not be lost (and its seq reused) by a database crash."""
    if not pending:
        return []
    durability = ", set_config('synchronous_commit', 'on', true)" if durable else ""
    await cur.execute(
        f"SELECT set_config('lock_timeout', '0', true){durability}, pg_advisory_xact_lock(%s), pg_notify(%s, '')",
        (LOG_LOCK_KEY, CHANNEL),
    )
    await cur.execute(
        _INSERT + (f" RETURNING {_ROW_COLS}" if returning else ""),
        (
            pending.library_id, pending.source, pending.scan_id, pending.item_ids, pending.rating_keys,
            pending.item_kinds, pending.kinds, pending.states, pending.titles,
        ),
    )  # fmt: skip
    return list(await cur.fetchall()) if returning else []


class TokenCodec:
    """Resume tokens: a version, the seq and an HMAC of both with the deployment's key (made by migration 0007
    and shared by every replica), so a made-up or altered token is INVALID_ARGUMENT, never a silent skip."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self._key, _TOKEN_VERSION + raw, hashlib.sha256).digest()[:_TOKEN_MAC_BYTES]

    def encode(self, seq: int) -> str:
        raw = seq.to_bytes(8, "big")
        return _TOKEN_VERSION.decode() + base64.urlsafe_b64encode(raw + self._mac(raw)).decode().rstrip("=")

    def decode(self, token: str) -> int:
        try:
            if not token.startswith(_TOKEN_VERSION.decode()):
                raise ValueError
            body = token[len(_TOKEN_VERSION) :]
            data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            raw, mac = data[:8], data[8:]
            if len(data) != 8 + _TOKEN_MAC_BYTES or not hmac.compare_digest(mac, self._mac(raw)):
                raise ValueError
        except ValueError as exc:  # binascii.Error is a ValueError
            raise InvalidArgumentError.single(
                "resume_token", "is not a resume token of this catalog's changes; start without one"
            ) from exc
        return int.from_bytes(raw, "big")


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class ChangeHub:
    """One LISTEN connection per process, shared by every WatchChanges stream: a notification wakes them all.

    Readers also re-read every `poll_seconds`, so a notification lost while the connection was down only
    delays them. `close()` (at shutdown) wakes them for good, so their streams end."""

    def __init__(self, conninfo: str, *, poll_seconds: float = 2.0) -> None:
        self.conninfo = conninfo
        self.poll_seconds = poll_seconds
        self.closed = False
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="change-hub")

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def stop(self) -> None:
        self.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def changed(self) -> asyncio.Event:
        """Set at the next notification (take it *before* reading, so a commit during the read is not missed)."""
        return self._event

    async def wait(self, event: asyncio.Event) -> None:
        """Until `event` is set, or the poll interval has passed."""
        try:
            await asyncio.wait_for(event.wait(), self.poll_seconds)
        except TimeoutError:
            pass

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _listen(self) -> None:
        delay = 0.5
        while not self.closed:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.5
                    self._wake()  # anything committed while not listening
                    async for _ in conn.notifies():
                        self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change notifications unavailable; readers poll until back", extra={"error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class ChangeLog:
    """Reads of the change log (WatchChanges) and its retention."""

    def __init__(self, store: Store, *, page_size: int = 250, retention_hours: float = 168.0) -> None:
        self.store = store
        self.page_size = page_size
        self.retention_seconds = retention_hours * 3600
        self.codec: TokenCodec | None = None

    async def start(self) -> None:
        """Load the token key (the schema must be migrated)."""
        async with self.store.cursor() as cur:
            await cur.execute("SELECT token_key FROM change_feed WHERE id = 1")
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError("catalog.change_feed has no row: run the catalog migrations (0007)")
        self.codec = TokenCodec(bytes(row[0]))

    def _codec(self) -> TokenCodec:
        if self.codec is None:
            raise RuntimeError("ChangeLog.start() was not awaited")
        return self.codec

    def message(self, row: Sequence[Any]) -> common_pb2.ItemChange:
        """An ItemChange from a row of `_ROW_COLS`."""
        return common_pb2.ItemChange(
            resume_token=self._codec().encode(row[0]),
            library_id=str(row[1]),
            item_id=str(row[2]),
            rating_key=row[3],
            item_kind=row[4],
            kind=row[5],
            source=row[6],
            scan_id=str(row[7]) if row[7] is not None else "",
            state=row[8],
            title=row[9],
            commit_time=_ts(row[10]),
        )

    async def watch(
        self, request: catalog_pb2.WatchChangesRequest, hub: ChangeHub
    ) -> AsyncIterator[list[common_pb2.ItemChange]]:
        """Pages of changes in feed order from the request's starting point, then new ones as they commit,
        until the hub closes. Pages are read as the caller takes them, so a slow client holds one page."""
        library_id = ingest.parse_uuid(request.library_id, "library_id", required=False)
        if request.resume_token and request.from_oldest:
            raise InvalidArgumentError.single("from_oldest", "cannot be combined with resume_token")
        after = self._codec().decode(request.resume_token) if request.resume_token else None
        async with self.store.cursor() as cur:
            if library_id is not None:
                await cur.execute("SELECT 1 FROM libraries WHERE id = %s", (library_id,))
                if await cur.fetchone() is None:
                    raise NotFoundError("library", str(library_id), resource_type="plexsync.v1.Library")
            await cur.execute("SELECT pruned_through, (SELECT max(seq) FROM item_changes) FROM change_feed")
            row = await cur.fetchone()
        assert row is not None
        pruned, newest = int(row[0]), int(row[1] or 0)
        if after is None:
            after = pruned if request.from_oldest else max(newest, pruned)
        elif after < pruned:
            raise FailedPreconditionError(_EXPIRED)
        # `after`: every change up to it was delivered or does not match the filter.
        while not hub.closed:
            changed = hub.changed()
            rows, pruned, newest = await self._page(after, library_id)
            if pruned > after:  # deleted by retention while this client was behind
                raise FailedPreconditionError(_EXPIRED)
            if rows:
                yield [self.message(r) for r in rows]
                after = int(rows[-1][0])
                if len(rows) == self.page_size:
                    continue
            # A short page saw everything committed up to `newest` (commit order = seq order).
            after = max(after, newest)
            await hub.wait(changed)

    async def _page(self, after: int, library_id: uuid.UUID | None) -> tuple[list[tuple[Any, ...]], int, int]:
        """(rows after `after`, pruned_through, newest seq), all from one statement's snapshot."""
        where = "seq > %s" + (" AND library_id = %s" if library_id is not None else "")
        params: list[Any] = [after, *([library_id] if library_id is not None else []), self.page_size]
        async with self.store.cursor() as cur:
            await cur.execute(
                f"SELECT f.pruned_through, (SELECT max(seq) FROM item_changes), c.* FROM change_feed f "
                f"LEFT JOIN LATERAL (SELECT {_ROW_COLS} FROM item_changes WHERE {where} ORDER BY seq LIMIT %s) c "
                "ON true",
                params,
            )
            result = await cur.fetchall()
        pruned, newest = int(result[0][0]), int(result[0][1] or 0)
        rows = [tuple(r[2:]) for r in result if r[2] is not None]
        return rows, pruned, newest

    async def prune(self) -> int:
        """Delete changes older than the retention (at most PRUNE_MAX_ROWS, oldest first); how many. One replica
        at a time (the others skip the run)."""
        async with self.store.cursor() as cur:
            await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,))
            locked = await cur.fetchone()
            if not locked or not locked[0]:
                return 0
            await cur.execute(
                "SELECT max(seq), min(seq) FROM item_changes "
                "WHERE committed_at < clock_timestamp() - make_interval(secs => %s)",
                (self.retention_seconds,),
            )
            row = await cur.fetchone()
            if row is None or row[0] is None:
                return 0
            through = min(int(row[0]), int(row[1]) + PRUNE_MAX_ROWS - 1)
            await cur.execute("DELETE FROM item_changes WHERE seq <= %s", (through,))
            deleted = cur.rowcount
            await cur.execute(
                "UPDATE change_feed SET pruned_through = GREATEST(pruned_through, %s) WHERE id = 1", (through,)
            )
        if deleted:
            log.info("change log pruned", extra={"deleted": deleted, "through_seq": through})
        return deleted

    async def run_pruner(self, interval_seconds: float) -> None:
        """Prune now and every `interval_seconds` until cancelled."""
        while True:
            try:
                while await self.prune() >= PRUNE_MAX_ROWS:
                    pass
            except Exception:
                log.exception("change log prune failed; trying again later")
            await asyncio.sleep(interval_seconds)
