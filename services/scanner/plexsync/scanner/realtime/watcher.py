"""One Plex server's notification stream, kept open and turned into catalog updates within seconds.

`ServerWatcher.run` connects to ``/:/websockets/notifications`` (token in the ``X-Plex-Token`` header, never
in the URL), with websocket pings every ``heartbeat`` seconds so a silent or vanished server is noticed,
and reconnects with exponential backoff and full jitter. A reader task feeds timeline entries to the
`ChangeBatcher`; a flusher task applies due batches (`BatchApplier`) for the server's libraries whose sync
and real-time setting are on, publishes an ``ItemChangedEvent`` per committed change and records the delay.

Plex replays nothing, so whenever the watcher cannot be sure it saw everything it asks the scheduler for an
incremental scan of the libraries concerned: after a reconnect (changes made while it was down), when it
takes over a watch another replica held, and when a library activity ends whose start it did not see or
during which it saw no item change (a skipped message). The periodic schedule stays the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
from opentelemetry import trace
from plexsync.common.eventbus import item_subject
from plexsync.common.metrics import METRICS
from plexsync.common.plex_tls import plex_ssl_context
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_client import (
    PlexClient,
    PlexCredentials,
    PlexUnauthorizedError,
    certificate_failure,
)
from plexsync.scanner.realtime.applier import BatchApplier, RealtimeCatalog
from plexsync.scanner.realtime.batcher import ChangeBatcher, SectionBatch
from plexsync.scanner.realtime.leases import WatcherStatus
from plexsync.scanner.realtime.notifications import ActivityEntry, TimelineEntry, parse_message
from plexsync.v1 import common_pb2, events_pb2, scanner_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer("plexsync.scanner.realtime")

NOTIFICATIONS_PATH = "/:/websockets/notifications"
# How stale the watcher's view of the server's libraries (and their settings) may get.
LIBRARIES_REFRESH_SECONDS = 10.0
UNKNOWN_SECTION_REFRESH_SECONDS = 1.0


class WatcherCatalog(RealtimeCatalog, Protocol):
    async def list_libraries(self, server_id: str) -> list[common_pb2.Library]: ...

    async def list_path_replacements(self, server_id: str) -> list[common_pb2.PathReplacement]: ...


class WatcherCredentials(Protocol):
    async def credentials(self, server_id: str, *, recheck: bool = False) -> PlexCredentials: ...


class FallbackScans(Protocol):
    async def incremental_scan(self, library_id: str, reason: str) -> None: ...


class EventSink(Protocol):
    def submit(self, subject: str, event: events_pb2.ItemChangedEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class WatcherOptions:
    heartbeat: float = 10.0
    connect_timeout: float = 10.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    debounce: float = 0.25
    max_wait: float = 1.0
    max_keys: int = 500
    metadata_batch: int = 50
    # The trust for an https stream, as the scans' Plex clients have it (None: the usual CAs; False: unverified).
    tls: ssl.SSLContext | bool | None = None


@dataclass(slots=True)
class OpenActivity:
    """A library activity whose start this connection saw, and the final item entries seen since."""

    section_key: str
    changes_seen: int = 0


class StreamClosedError(Exception):
    """The notification stream ended (a drop, a missed heartbeat, a server restart)."""


class ServerWatcher:
    def __init__(
        self,
        server_id: str,
        *,
        catalog: WatcherCatalog,
        credentials: WatcherCredentials,
        scheduler: FallbackScans,
        events: EventSink,
        make_plex: Callable[[PlexCredentials, str], PlexClient],
        options: WatcherOptions,
        took_over_from: str = "",
    ) -> None:
        self.server_id = server_id
        self.catalog, self.credentials, self.scheduler, self.events = catalog, credentials, scheduler, events
        self.make_plex, self.options = make_plex, options
        self.status = WatcherStatus(server_id)
        self.took_over_from = took_over_from
        self.batcher = ChangeBatcher(debounce=options.debounce, max_wait=options.max_wait, max_keys=options.max_keys)
        self._libraries: dict[str, common_pb2.Library] = {}  # by Plex section key: sync and real-time on
        self._mapper = PathMapper()
        self._recheck = False  # ask auth to re-verify the token before the next connection
        self._libraries_at = 0.0
        self._wake = asyncio.Event()
        # Library activities open on this connection, by uuid.
        self._activities: dict[str, OpenActivity] = {}

    # ------------------------------------------------------------------ the connection loop
    async def run(self) -> None:
        attempt = 0
        ever_connected = False
        while True:
            try:
                await self._refresh_libraries(force=True)
                creds = await self.credentials.credentials(self.server_id, recheck=self._recheck)
                self._recheck = False
                self.status.state = scanner_pb2.WATCHER_STATE_CONNECTING
                async with NotificationConnection(self, creds) as (plex, ws):
                    self.status.state = scanner_pb2.WATCHER_STATE_CONNECTED
                    self.status.connected_since = datetime.now(UTC)
                    self.status.last_error = ""
                    self._activities.clear()
                    if ever_connected:
                        self.status.reconnects += 1
                        METRICS.realtime_reconnects.add(1)
                        await self._fallback_all("the notification stream reconnected; changes made meanwhile")
                    elif self.took_over_from:
                        await self._fallback_all(f"took over the watch from {self.took_over_from}")
                    ever_connected = True
                    attempt = 0
                    await self._pump(plex, ws)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status.state = scanner_pb2.WATCHER_STATE_BACKING_OFF
                self.status.connected_since = None
                self.status.last_error = _describe(exc)
                self._recheck = isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 401
                delay = random.uniform(0, min(self.options.backoff_max, self.options.backoff_min * 2**attempt))
                attempt = min(attempt + 1, 16)
                log.warning(
                    "real-time stream down; reconnecting",
                    extra={"server_id": self.server_id, "error": self.status.last_error, "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    async def _pump(self, plex: PlexClient, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read until the stream ends; apply batches meanwhile. Whatever is held is applied before returning."""
        flusher = asyncio.create_task(self._flush_forever(plex), name=f"realtime-flush-{self.server_id}")
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                self.status.last_message_at = datetime.now(UTC)
                self._handle(msg.data)
                if flusher.done():
                    flusher.result()  # surface its failure
            raise StreamClosedError(f"the notification stream closed ({ws.close_code or 'no close frame'})")
        finally:
            flusher.cancel()
            with contextlib.suppress(BaseException):
                await flusher
            for batch in self.batcher.take_all():
                with contextlib.suppress(Exception):
                    await self._apply(plex, batch)

    def _handle(self, data: str) -> None:
        now, wall = time.monotonic(), time.time()
        for n in parse_message(data):
            if isinstance(n, TimelineEntry):
                if n.final:
                    for activity in self._activities.values():
                        if activity.section_key == n.section_key:
                            activity.changes_seen += 1
                self.batcher.add(n, now, wall)
                self._wake.set()
            elif isinstance(n, ActivityEntry) and n.touches_library:
                self._activity(n)

    def _activity(self, n: ActivityEntry) -> None:
        if n.event == "started":
            self._activities[n.uuid] = OpenActivity(n.section_key)
            return
        if n.event != "ended":
            return
        opened = self._activities.pop(n.uuid, None)
        if opened is None:
            reason = f"Plex finished {n.type} of section {n.section_key}, whose start the watcher did not see"
        elif opened.changes_seen == 0:
            reason = f"Plex finished {n.type} of section {n.section_key} and the watcher saw no item change"
        else:
            return
        library = self._libraries.get(n.section_key)
        if library is not None:
            asyncio.get_running_loop().create_task(self._fallback(library, reason))

    async def _flush_forever(self, plex: PlexClient) -> None:
        while True:
            wait = self.batcher.next_due_in(time.monotonic())
            self._wake.clear()
            if wait is None or wait > 0:
                idle = LIBRARIES_REFRESH_SECONDS if wait is None else min(wait, LIBRARIES_REFRESH_SECONDS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), idle)
                try:
                    await self._refresh_libraries()  # settings changed through the catalog show within seconds
                except Exception as exc:
                    log.warning("could not read the server's libraries", extra={"error": _describe(exc)})
                continue
            for batch in self.batcher.take(time.monotonic()):
                await self._apply(plex, batch)

    # ------------------------------------------------------------------ applying
    async def _apply(self, plex: PlexClient, batch: SectionBatch) -> None:
        await self._refresh_libraries()
        library = self._libraries.get(batch.section_key)
        if library is None and time.monotonic() - self._libraries_at >= UNKNOWN_SECTION_REFRESH_SECONDS:
            await self._refresh_libraries(force=True)  # registered (or switched on) since the last look
            library = self._libraries.get(batch.section_key)
        if library is None:
            return  # a library plexsync does not sync in real time (or does not know yet: the schedule finds it)
        with tracer.start_as_current_span("realtime.apply") as span:
            span.set_attribute("plexsync.library_id", library.id)
            span.set_attribute("plexsync.realtime.upserts", len(batch.upserts))
            span.set_attribute("plexsync.realtime.deletes", len(batch.deletes))
            try:
                applier = BatchApplier(plex, self.catalog, metadata_batch=self.options.metadata_batch)
                applied = await applier.apply(library, self.states_for(library), batch)
            except PlexUnauthorizedError:
                raise
            except Exception as exc:
                # The changes are not lost: the incremental scan fetches whatever the catalog does not have.
                log.warning(
                    "could not apply real-time changes; asking for a scan",
                    extra={"library_id": library.id, "error": _describe(exc)}, exc_info=True,
                )  # fmt: skip
                await self._fallback(library, f"real-time update failed: {_describe(exc)}")
                return
        committed = time.time()
        kind = common_pb2.LibraryKind.Name(library.kind)
        for change in applied.changes:
            changed_at = applied.changed_at.get(change.rating_key)
            event = events_pb2.ItemChangedEvent(event_id=str(uuid.uuid4()), change=change, server_id=self.server_id)
            if changed_at is not None:
                event.plex_change_time.FromNanoseconds(int(changed_at * 1e9))
                delay = max(0.0, committed - changed_at)
                METRICS.realtime_delay.record(delay, {"plexsync.library.kind": kind})
                self.status.lag_ms = int(delay * 1000)
            self.events.submit(item_subject(library.id, "changed"), event)
        self.status.changes_applied += len(applied.changes)
        METRICS.realtime_changes.add(len(applied.changes), {"plexsync.library.kind": kind})
        if applied.failed:
            await self._fallback(library, f"{len(applied.failed)} real-time updates failed")

    async def _refresh_libraries(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._libraries_at < LIBRARIES_REFRESH_SECONDS:
            return
        libraries = await self.catalog.list_libraries(self.server_id)
        rules = await self.catalog.list_path_replacements(self.server_id)
        mapper = PathMapper((r.plex_path, r.local_path) for r in rules)
        self._libraries = {
            lib.plex_key: lib for lib in libraries if lib.sync_enabled and lib.realtime_enabled and not lib.removed
        }
        self._mapper = mapper
        self._libraries_at = time.monotonic()
        self.status.library_ids = sorted(lib.id for lib in self._libraries.values())

    def states_for(self, library: common_pb2.Library) -> FileStates:
        return FileStates(self._mapper, remote_streaming=library.remote_streaming_enabled)

    # ------------------------------------------------------------------ fallbacks
    async def _fallback_all(self, reason: str) -> None:
        for library in list(self._libraries.values()):
            await self._fallback(library, reason)

    async def _fallback(self, library: common_pb2.Library, reason: str) -> None:
        try:
            await self.scheduler.incremental_scan(library.id, f"real-time watcher: {reason}")
        except Exception as exc:
            log.warning(
                "could not ask the scheduler for a scan", extra={"library_id": library.id, "error": _describe(exc)}
            )
            return
        self.status.fallback_scans += 1
        METRICS.realtime_fallback_scans.add(1)
        log.info("asked for an incremental scan", extra={"library_id": library.id, "reason": reason})


class NotificationConnection:
    """``async with NotificationConnection(watcher, creds) as (plex, ws)``: a Plex client for the fetches, and the
    notification stream."""

    def __init__(self, watcher: ServerWatcher, creds: PlexCredentials) -> None:
        self.watcher, self.creds = watcher, creds
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> tuple[PlexClient, aiohttp.ClientWebSocketResponse]:
        w = self.watcher
        try:
            plex = await self._stack.enter_async_context(w.make_plex(self.creds, w.server_id))
            timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
            session = await self._stack.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=w.options.connect_timeout))
            )
            url = self.creds.base_url.rstrip("/") + NOTIFICATIONS_PATH
            ws = await self._stack.enter_async_context(
                session.ws_connect(
                    url,
                    params={"filters": "timeline,activity"},
                    headers={"X-Plex-Token": self.creds.token, "X-Plex-Client-Identifier": self.creds.client_identifier,
                             "Accept": "application/json"},
                    heartbeat=w.options.heartbeat,
                    timeout=timeout,
                    ssl=_ssl_for(url, w.options.tls),
                    autoping=True,
                )
            )  # fmt: skip
        except BaseException:
            await self._stack.aclose()
            raise
        return plex, ws

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def _ssl_for(url: str, tls: ssl.SSLContext | bool | None) -> ssl.SSLContext | bool:
    if not url.startswith("https:"):
        return False
    return plex_ssl_context() if tls is None else tls


def _describe(exc: BaseException) -> str:
    """A short, secret-free description (the token is only ever in a header, never in a message)."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"Plex refused the notification stream (HTTP {exc.status})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = certificate_failure(exc.certificate_error) or "certificate verify failed"
        return f"Plex at {exc.host}:{exc.port}: the TLS certificate could not be verified ({reason})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
