"""ScanManager: starts, tracks, cancels and reports scans; registers a server's libraries.

One scan per library at a time (enforced in the database, so across replicas too). Each scan runs
as an asyncio task with its event feed, a progress ticker (events at least once a second) and a
heartbeat that persists its counts, so GetScan shows live numbers and a scanner that dies leaves a
row the next start-up (or a peer's reaper) marks FAILED, writing the scan's `failed` event to the outbox in the
same transaction (ScanRepository.reap): consumers of the scan's events see it end too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from plexsync.common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PlexsyncError,
    UnauthenticatedError,
    UnavailableError,
)
from plexsync.common.metrics import METRICS
from plexsync.scanner.events import EventPublisher, ScanEmitter, ScanFeed
from plexsync.scanner.library_scanner import CatalogWriteError, Counters, LibraryScanner, ScanOptions
from plexsync.scanner.listing import ListingPool
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_client import (
    PlexClient,
    PlexCredentials,
    PlexError,
    PlexUnauthorizedError,
    PlexUnavailableError,
)
from plexsync.scanner.plex_models import PlexSection
from plexsync.scanner.ports import Catalog, Credentials
from plexsync.scanner.repository import OWNER, ScanRepository, to_proto
from plexsync.scanner.settings import ScannerSettings
from plexsync.scanner.stats import ScanStats
from plexsync.v1 import catalog_pb2, common_pb2, events_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer("plexsync.scanner")

_MODE_LABELS = {common_pb2.SCAN_MODE_INCREMENTAL: "incremental", common_pb2.SCAN_MODE_DEEP: "deep"}


def _record_outcome(
    span: trace.Span,
    library: common_pb2.Library,
    mode: common_pb2.ScanMode.ValueType,
    status: common_pb2.ScanStatus.ValueType,
    counts: common_pb2.ScanCounts,
    duration: float,
    error: str,
) -> None:
    """Counts on the scan span, and the scan duration / items metrics (no span per item)."""
    outcome = common_pb2.ScanStatus.Name(status).removeprefix("SCAN_STATUS_").lower()
    kind = common_pb2.LibraryKind.Name(library.kind).removeprefix("LIBRARY_KIND_").lower()
    span.set_attribute("plexsync.scan.outcome", outcome)
    span.set_attribute("plexsync.library.kind", kind)
    for name in ("seen", "total", "added", "updated", "unchanged", "failed", "missing", "fetched", "excluded"):
        span.set_attribute(f"plexsync.items.{name}", int(getattr(counts, name)))
    if status != common_pb2.SCAN_STATUS_COMPLETED:
        span.set_status(Status(StatusCode.ERROR, error[:200]))
    attributes = {"plexsync.library.kind": kind, "plexsync.scan.mode": _MODE_LABELS.get(mode, "unspecified"),
                  "plexsync.scan.outcome": outcome}  # fmt: skip
    METRICS.scan_duration.record(duration, attributes)
    for item_outcome in ("added", "updated", "unchanged", "failed"):
        value = int(getattr(counts, item_outcome))
        if value:
            METRICS.scan_items.add(value, {"plexsync.library.kind": kind, "plexsync.item.outcome": item_outcome})


def _trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


OTHER_VIDEO_AGENTS = frozenset({"com.plexapp.agents.none", "tv.plex.agents.none"})
RETAINED_FEEDS = 200
ERROR_CODES: dict[type[Exception], str] = {
    InvalidArgumentError: "INVALID_ARGUMENT",
    NotFoundError: "NOT_FOUND",
    FailedPreconditionError: "FAILED_PRECONDITION",
    UnavailableError: "UNAVAILABLE",
    UnauthenticatedError: "UNAUTHENTICATED",
    PermissionDeniedError: "PERMISSION_DENIED",
}
HEARTBEAT_SECONDS = 2.0


class PeerError(Exception):
    """A peer service (catalog, auth) failed a call; ``code`` is the gRPC status name."""

    def __init__(self, service: str, code: str, details: str) -> None:
        super().__init__(f"{service} answered {code}: {details}")
        self.service = service
        self.code = code
        self.details = details


def section_kind(section: PlexSection) -> common_pb2.LibraryKind.ValueType:
    """The library kind plexsync gives a Plex section, or UNSPECIFIED for kinds it does not sync."""
    if section.type == "show":
        return common_pb2.LIBRARY_KIND_SHOWS
    if section.type == "movie":
        if section.agent in OTHER_VIDEO_AGENTS:
            return common_pb2.LIBRARY_KIND_OTHER_VIDEOS
        return common_pb2.LIBRARY_KIND_MOVIES
    return common_pb2.LIBRARY_KIND_UNSPECIFIED


@dataclass
class RunningScan:
    id: uuid.UUID
    library: common_pb2.Library
    mode: common_pb2.ScanMode.ValueType
    feed: ScanFeed
    counters: Counters = field(default_factory=Counters)
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    cancel_reason: str = ""
    scanner: LibraryScanner | None = None
    stats: ScanStats = field(default_factory=ScanStats)
    # Cancelled because this scanner stops and hands the scan's job back to the queue.
    requeued: bool = False


class ScanManager:
    def __init__(
        self,
        *,
        settings: ScannerSettings,
        catalog: Catalog,
        credentials: Credentials,
        repository: ScanRepository,
        publisher: EventPublisher,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.credentials = credentials
        self.repository = repository
        self.publisher = publisher
        self.running: dict[uuid.UUID, RunningScan] = {}
        self._finished: OrderedDict[uuid.UUID, ScanFeed] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None
        self._recording: set[asyncio.Task[None]] = set()  # ends of scans the database missed, retried
        self.listing_pool: ListingPool | None = ListingPool() if settings.scan_listing_worker else None

    @property
    def options(self) -> ScanOptions:
        s = self.settings
        return ScanOptions(
            page_size=s.scan_page_size,
            concurrency=s.scan_concurrency,
            batch_size=s.scan_batch_size,
            metadata_batch=s.scan_metadata_batch,
        )

    def plex_client(self, creds: PlexCredentials, server_id: str, stats: ScanStats | None = None) -> PlexClient:
        async def refresh(recheck: bool) -> PlexCredentials:
            return await self.credentials.credentials(server_id, recheck=recheck)

        s = self.settings
        return PlexClient(
            creds,
            refresh=refresh,
            fmt=s.plex_format,
            timeout=s.plex_timeout_seconds,
            max_retries=s.plex_max_retries,
            backoff=s.plex_backoff_seconds,
            concurrency=s.scan_concurrency,
            stats=stats,
            verify=s.plex_tls(),
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        reaped = await self.repository.reap(at_startup=True)
        if reaped:
            log.warning("marked scans of stopped scanners as failed", extra={"count": reaped})
        self.publisher.start()
        self._reaper = asyncio.create_task(self._reap_forever(), name="scan-reaper")
        if self.listing_pool is not None:
            try:
                await self.listing_pool.start()
            except Exception:  # scans still work, in one process
                log.warning("could not start the listing worker process", exc_info=True)
                self.listing_pool = None

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(5.0, self.settings.scan_stale_seconds / 2))
            try:
                reaped = await self.repository.reap()
                if reaped:
                    log.warning("marked scans of stopped scanners as failed", extra={"count": reaped})
            except Exception:
                log.warning("scan reaper failed", exc_info=True)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for task in self._recording:
            task.cancel()
        for rs in list(self.running.values()):
            rs.cancel_reason = "the scanner is shutting down"
            if rs.task is not None:
                rs.task.cancel()
        tasks = [rs.task for rs in self.running.values() if rs.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.publisher.drain()
        if self.listing_pool is not None:
            await self.listing_pool.close()

    # ------------------------------------------------------------------ SyncServer
    @staticmethod
    async def _sections(plex: PlexClient, name: str) -> list[PlexSection]:
        try:
            return list(await plex.sections())
        except PlexUnauthorizedError as exc:
            raise UnavailableError(
                f"Plex server {name!r} refused its token (401); log in again or re-add the server"
            ) from exc
        except PlexError as exc:
            raise UnavailableError(f"Plex server {name!r} could not list its libraries: {exc}") from exc

    async def sync_server(self, server_id: str) -> catalog_pb2.RegisterLibrariesResponse:
        if not server_id:
            raise InvalidArgumentError.single("server_id", "is required")
        creds = await self.credentials.credentials(server_id)
        name = await self.credentials.server_name(server_id)
        async with self.plex_client(creds, server_id) as plex:
            sections = [
                s for s in await self._sections(plex, name) if section_kind(s) != common_pb2.LIBRARY_KIND_UNSPECIFIED
            ]
            # An empty answer would remove every library of the server from the catalog: ask once more first.
            confirmed_empty = not sections and not [
                s for s in await self._sections(plex, name) if section_kind(s) != common_pb2.LIBRARY_KIND_UNSPECIFIED
            ]
        request = catalog_pb2.RegisterLibrariesRequest(
            server_id=server_id, server_name=name, confirmed_empty=confirmed_empty
        )
        for s in sections:
            kind = section_kind(s)
            request.sections.append(
                catalog_pb2.LibrarySection(
                    plex_key=s.key,
                    name=s.title,
                    kind=kind,
                    plex_uuid=s.uuid,
                    agent=s.agent,
                    language=s.language,
                    locations=s.locations,
                )
            )
        return await self.catalog.register_libraries(request)

    # ------------------------------------------------------------------ ScanLibrary
    async def start_scan(
        self,
        library_id: str,
        mode: common_pb2.ScanMode.ValueType,
        *,
        force: bool = False,
        job_id: str = "",
        attempt: int = 0,
    ) -> common_pb2.Scan:
        """Start a scan task and return its row; ``attempt`` is the delivery of ``job_id`` (0 without a job)."""
        if not library_id:
            raise InvalidArgumentError.single("library_id", "is required")
        if mode == common_pb2.SCAN_MODE_UNSPECIFIED:
            mode = common_pb2.SCAN_MODE_INCREMENTAL
        if mode not in (common_pb2.SCAN_MODE_INCREMENTAL, common_pb2.SCAN_MODE_DEEP):
            raise InvalidArgumentError.single("mode", f"unknown scan mode {mode}")
        library = await self.catalog.get_library(library_id)
        if library.removed:
            raise FailedPreconditionError(
                f"library {library.name!r} ({library_id}) is gone from its server; run SyncServer to refresh libraries"
            )
        if not library.sync_enabled and not force:
            raise FailedPreconditionError(
                f"sync is disabled for library {library.name!r} ({library_id}); enable it or pass force"
            )
        row = await self.repository.create(
            library_id=library_id, server_id=library.server_id, mode=mode, force=force, job_id=job_id,
            trace_id=_trace_id(), attempt=attempt,
        )  # fmt: skip
        rs = RunningScan(id=row.id, library=library, mode=mode, feed=ScanFeed())
        self.running[row.id] = rs
        emitter = ScanEmitter(
            scan_id=str(row.id),
            library_id=library_id,
            server_id=library.server_id,
            mode=mode,
            feed=rs.feed,
            publisher=self.publisher,
            job_id=job_id,
        )
        await emitter.started(library.name, library.kind, replica=OWNER, attempt=attempt, force=force)
        rs.task = asyncio.create_task(self._run(rs, emitter), name=f"scan-{row.id}")
        return to_proto(row)

    async def _run(self, rs: RunningScan, emitter: ScanEmitter) -> None:
        library = rs.library
        server_name = library.server_id
        ticker = asyncio.create_task(self._tick(rs, emitter))
        status: common_pb2.ScanStatus.ValueType = common_pb2.SCAN_STATUS_FAILED
        error = ""
        code = ""
        with tracer.start_as_current_span("scan") as span:
            span.set_attribute("plexsync.scan.id", str(rs.id))
            span.set_attribute("plexsync.library.id", library.id)
            span.set_attribute("plexsync.server.id", library.server_id)
            span.set_attribute("plexsync.scan.mode", _MODE_LABELS.get(rs.mode, "unspecified"))
            METRICS.scans_running.add(1)
            try:
                with contextlib.suppress(Exception):
                    server_name = await self.credentials.server_name(library.server_id) or server_name
                creds = await self.credentials.credentials(library.server_id)
                rules = await self.catalog.list_path_replacements(library.server_id)
                mapper = PathMapper((r.plex_path, r.local_path) for r in rules)
                states = FileStates(mapper, remote_streaming=library.remote_streaming_enabled)

                async def item_error(rating_key: str, title: str, message: str, http_status: int) -> None:
                    await emitter.item_error(rating_key, title, message, http_status)

                async with self.plex_client(creds, library.server_id, rs.stats) as plex:
                    scanner = LibraryScanner(
                        plex=plex,
                        catalog=self.catalog,
                        library=library,
                        scan_id=str(rs.id),
                        mode=rs.mode,
                        states=states,
                        options=self.options,
                        counters=rs.counters,
                        on_item_error=item_error,
                        listing_pool=self.listing_pool,
                        stats=rs.stats,
                    )
                    rs.scanner = scanner
                    flusher = asyncio.create_task(scanner.periodic_flush())
                    try:
                        await scanner.run()
                    finally:
                        flusher.cancel()
                status = common_pb2.SCAN_STATUS_COMPLETED
            except asyncio.CancelledError:
                status = common_pb2.SCAN_STATUS_CANCELLED
                error = rs.cancel_reason or "cancelled"
            except PlexUnauthorizedError as exc:
                error = (
                    f"Plex server {server_name!r} refused plexsync's token (401), also after re-checking its "
                    f"credentials; log in again or re-add the server ({exc})"
                )
                code = "UNAUTHENTICATED"
            except PlexUnavailableError as exc:
                error = f"Plex server {server_name!r} is unavailable: {exc}"
                code = "UNAVAILABLE"
            except PlexError as exc:
                error = f"Plex server {server_name!r} failed the scan: {exc}"
                code = "UNAVAILABLE"
            except PeerError as exc:
                error = f"{exc.service} failed during the scan: {exc.details}"
                code = exc.code
            except PlexsyncError as exc:
                error = f"the scan could not start or go on: {exc}"
                code = ERROR_CODES.get(type(exc), "INTERNAL")
            except CatalogWriteError as exc:
                error = f"the catalog failed during the scan: {exc}"
                code = "UNAVAILABLE"
            except Exception as exc:
                log.exception("scan failed", extra={"scan_id": str(rs.id)})
                error = f"internal error: {type(exc).__name__}: {exc}"
                code = "INTERNAL"
            finally:
                ticker.cancel()
                with contextlib.suppress(BaseException):
                    await ticker
            duration = time.monotonic() - rs.started
            counts = rs.counters.to_proto()
            METRICS.scans_running.add(-1)
            _record_outcome(span, library, rs.mode, status, counts, duration, error)
            span.set_attributes(rs.stats.span_attributes())
            stats = rs.stats.to_proto()
            requeued = status == common_pb2.SCAN_STATUS_CANCELLED and rs.requeued
            try:
                # Persist first, so a watcher that sees the terminal event reads the final scan.
                await asyncio.shield(
                    self.repository.finish(rs.id, status, counts, error, stats=rs.stats, requeued=requeued)
                )
            except Exception:
                log.exception("could not record the end of a scan; retrying", extra={"scan_id": str(rs.id)})
                task = asyncio.create_task(self._record_end_later(rs, status, counts, error, requeued))
                self._recording.add(task)
                task.add_done_callback(self._recording.discard)
            try:
                await emitter.progress(counts, self._rate(rs), 0.0, "done")
                if status == common_pb2.SCAN_STATUS_COMPLETED:
                    await emitter.completed(counts, duration, stats)
                elif status == common_pb2.SCAN_STATUS_CANCELLED:
                    await emitter.cancelled(counts, error, stats, requeued=requeued)
                else:
                    log.warning("scan failed", extra={"scan_id": str(rs.id), "error": error})
                    await emitter.failed(counts, error, server_name, code, stats)
            finally:
                self.running.pop(rs.id, None)
                self._finished[rs.id] = rs.feed
                while len(self._finished) > RETAINED_FEEDS:
                    self._finished.popitem(last=False)
                if not self.running:
                    # A scan leaves reference cycles (its scanner, writer, tasks and their closures) holding the
                    # catalog's ETag map, megabytes for a big library; with the young-generation threshold raised
                    # for listing speed (__main__), a full collection is rare and idle memory kept growing scan
                    # after scan (+5 MB per 31k-item incremental). Collect once the service is idle.
                    gc.collect()
            log.info(
                "scan ended",
                extra={
                    "scan_id": str(rs.id),
                    "status": common_pb2.ScanStatus.Name(status),
                    "seconds": round(duration, 2),
                },
            )

    async def _record_end_later(
        self, rs: RunningScan, status: int, counts: common_pb2.ScanCounts, error: str, requeued: bool
    ) -> None:
        """Persist a scan's end once the database is back (it failed, often because the database did). Until
        then the row says RUNNING, and the reaper leaves a live scanner's rows alone: without this the scan
        would stay RUNNING until another scan of the library happened to notice."""
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                await self.repository.finish(rs.id, status, counts, error, stats=rs.stats, requeued=requeued)
            except Exception as exc:
                delay = min(delay * 2, 5.0)
                log.warning("still cannot record the end of a scan", extra={"scan_id": str(rs.id), "error": str(exc)})
                continue
            log.info("recorded the end of a scan late", extra={"scan_id": str(rs.id)})
            return

    def _rate(self, rs: RunningScan) -> float:
        elapsed = max(time.monotonic() - rs.started, 1e-6)
        return rs.counters.seen / elapsed

    async def _tick(self, rs: RunningScan, emitter: ScanEmitter) -> None:
        interval = self.settings.scan_progress_interval_seconds
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            c = rs.counters
            rate = self._rate(rs)
            eta = (max(c.total - c.seen, 0) / rate) if rate > 0 and c.total else None
            phase = rs.scanner.phase if rs.scanner is not None else "starting"
            await emitter.progress(c.to_proto(), rate, eta, phase)
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                last_beat = time.monotonic()
                try:
                    await self.repository.heartbeat(rs.id, c.to_proto(), rs.stats)
                except Exception:
                    log.warning("could not persist scan progress", extra={"scan_id": str(rs.id)})

    # ------------------------------------------------------------------ queries
    @staticmethod
    def parse_id(scan_id: str) -> uuid.UUID:
        if not scan_id:
            raise InvalidArgumentError.single("scan_id", "is required")
        try:
            return uuid.UUID(scan_id)
        except ValueError:
            raise InvalidArgumentError.single("scan_id", f"must be a scan id (UUID), got {scan_id[:64]!r}") from None

    async def get_scan(self, scan_id: str) -> common_pb2.Scan:
        sid = self.parse_id(scan_id)
        row = await self.repository.get(sid)
        if row is None:
            raise NotFoundError("scan", scan_id, resource_type="plexsync.v1.Scan")
        scan = to_proto(row)
        rs = self.running.get(sid)
        if rs is not None:
            scan.counts.CopyFrom(rs.counters.to_proto())
            scan.stats.CopyFrom(rs.stats.to_proto())
        return scan

    async def list_scans(
        self, *, library_id: str, status: int, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[common_pb2.Scan]:
        rows = await self.repository.list(library_id=library_id, status=status, limit=limit, after=after)
        out = []
        for row in rows:
            scan = to_proto(row)
            rs = self.running.get(row.id)
            if rs is not None:
                scan.counts.CopyFrom(rs.counters.to_proto())
                scan.stats.CopyFrom(rs.stats.to_proto())
            out.append(scan)
        return out

    async def cancel_scan(self, scan_id: str) -> common_pb2.Scan:
        sid = self.parse_id(scan_id)
        rs = self.running.get(sid)
        if rs is None:
            scan = await self.get_scan(scan_id)
            if scan.status in (common_pb2.SCAN_STATUS_RUNNING, common_pb2.SCAN_STATUS_PENDING):
                raise FailedPreconditionError(
                    f"scan {scan_id} runs on another scanner instance; cancel it there (or wait for it to be reaped)"
                )
            raise FailedPreconditionError(
                f"scan {scan_id} has already ended ({common_pb2.ScanStatus.Name(scan.status)})"
            )
        rs.cancel_reason = "cancelled by request"
        if rs.task is not None:
            rs.task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(rs.task), 5)
        return await self.get_scan(scan_id)

    def cancel_running(self, scan_id: str, reason: str, *, requeued: bool = False) -> bool:
        """Cancel a scan this process runs (without waiting); False when it runs here no more."""
        rs = self.running.get(self.parse_id(scan_id))
        if rs is None or rs.task is None or rs.task.done():
            return False
        if not rs.cancel_reason:
            rs.cancel_reason, rs.requeued = reason, requeued
        rs.task.cancel()
        return True

    async def wait(self, scan_id: str) -> common_pb2.Scan:
        """Wait for a scan this process runs to end (its row and terminal event written); its final state."""
        rs = self.running.get(self.parse_id(scan_id))
        if rs is not None and rs.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(rs.task)
        return await self.get_scan(scan_id)

    async def record_unstarted(
        self,
        *,
        library_id: str,
        server_id: str,
        mode: common_pb2.ScanMode.ValueType,
        force: bool,
        job_id: str,
        attempt: int,
        status: common_pb2.ScanStatus.ValueType,
        error: str,
        code: str = "",
    ) -> common_pb2.Scan:
        """A job's scan that ended before it could run: FAILED (it cannot start, ``code`` says why) or CANCELLED
        (cancelled before it started). Recorded and announced like any scan, so the scheduler learns of it."""
        row = await self.repository.record(
            library_id=library_id, server_id=server_id, mode=mode, force=force, job_id=job_id, trace_id=_trace_id(),
            attempt=attempt, status=status, error=error,
        )  # fmt: skip
        feed = ScanFeed()
        emitter = ScanEmitter(
            scan_id=str(row.id), library_id=library_id, server_id=server_id, mode=mode, feed=feed,
            publisher=self.publisher, job_id=job_id,
        )  # fmt: skip
        empty, no_stats = common_pb2.ScanCounts(), common_pb2.ScanStats()
        if status == common_pb2.SCAN_STATUS_CANCELLED:
            await emitter.started("", common_pb2.LIBRARY_KIND_UNSPECIFIED, replica=OWNER, attempt=attempt, force=force)
            await emitter.cancelled(empty, error, no_stats)
        else:
            await emitter.failed(empty, error, "", code or "INTERNAL", no_stats)
        self._finished[row.id] = feed
        while len(self._finished) > RETAINED_FEEDS:
            self._finished.popitem(last=False)
        return to_proto(row)

    async def watch(self, scan_id: str) -> AsyncIterator[events_pb2.ScanEvent]:
        sid = self.parse_id(scan_id)
        rs = self.running.get(sid)
        feed = rs.feed if rs is not None else self._finished.get(sid)
        if feed is not None:
            async for event in feed.follow():
                yield event
            return
        # Not in this process: follow the persisted row (another replica runs it, or it ended long ago).
        while True:
            scan = await self.get_scan(scan_id)
            event = events_pb2.ScanEvent(
                event_id=str(uuid.uuid4()), scan_id=scan.id, library_id=scan.library_id, server_id=scan.server_id,
                mode=scan.mode,
            )  # fmt: skip
            event.time.FromNanoseconds(time.time_ns())
            if scan.status == common_pb2.SCAN_STATUS_COMPLETED:
                event.completed.counts.CopyFrom(scan.counts)
                event.completed.duration.FromTimedelta(scan.end_time.ToDatetime() - scan.start_time.ToDatetime())
            elif scan.status == common_pb2.SCAN_STATUS_FAILED:
                event.failed.CopyFrom(events_pb2.ScanFailed(counts=scan.counts, error=scan.error))
            elif scan.status == common_pb2.SCAN_STATUS_CANCELLED:
                event.cancelled.CopyFrom(events_pb2.ScanCancelled(counts=scan.counts, reason=scan.error))
            else:
                event.progress.counts.CopyFrom(scan.counts)
                event.progress.phase = "running elsewhere"
                yield event
                await asyncio.sleep(1.0)
                continue
            yield event
            return
