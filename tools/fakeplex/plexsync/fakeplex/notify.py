"""Plex's notification stream: the websocket and EventSource endpoints, the messages, and faults on the stream.

`NotificationHub` owns every open notification connection. Each connection has a bounded queue and one writer,
so messages arrive in exactly the order they were published and a slow client never holds up the others (a
client that lets its queue overflow is dropped, as a real server drops it). Faults: ``drop`` (abort every
connection with no close frame, like a server restart), ``silent`` (send nothing and answer no websocket ping,
like a hung server; what is published meanwhile is lost), ``skip`` (the next N published messages go to nobody)
and ``refusing`` (new connections answered with an HTTP status).

`library_messages` turns library `Event`s into the sequence a real server sends (see
shared/plex-api/notifications.md): an activity started, timeline entries (a new item goes through states 0, 1,
3, 4 and 5; an edit is a 5, a deletion a 9) grouped up to 100 per container, status and other messages a
client must ignore, and the activity ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import WSMsgType, web
from plexsync.fakeplex.library import TYPE_NUMBERS, Event

LIBRARY_IDENTIFIER = "com.plexapp.plugins.library"
ENTRIES_PER_CONTAINER = 100
DEFAULT_FILTERS = "-log"
DEFAULT_PING_S = 10.0
DEFAULT_QUEUE_SIZE = 10_000
# The array each message type carries its entries in (types not listed: capitalized type + "Notification").
ARRAY_NAMES = {
    "timeline": "TimelineEntry",
    "activity": "ActivityNotification",
    "status": "StatusNotification",
    "progress": "ProgressNotification",
    "playing": "PlaySessionStateNotification",
    "backgroundProcessingQueue": "BackgroundProcessingQueueEventNotification",
    "update.statechange": "UpdateStateChangeNotification",
    "transcodeSession.update": "TranscodeSession",
    "provider.content.change": "ProviderContentChangeNotification",
}
# States a new item goes through after 0 (created) and before 5 (processed), with their metadataState.
_PROCESSING_STATES = ((1, "processing"), (3, "loading"), (4, "processing"))

ConnectionKind = Literal["websocket", "eventsource"]


# ---------------------------------------------------------------------- filters
@dataclass(frozen=True, slots=True)
class Filters:
    """Plex's ``filters`` parameter: ``-log`` (the default: all but log), ``timeline,activity`` (only those),
    ``-foo,bar`` (all but foo; naming bar as well changes nothing)."""

    include: frozenset[str] | None  # None: every type not excluded
    exclude: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: str | None) -> Filters:
        parts = [p.strip() for p in (raw if raw is not None and raw.strip() else DEFAULT_FILTERS).split(",")]
        parts = [p for p in parts if p and p != "-"]
        exclude = frozenset(p[1:] for p in parts if p.startswith("-"))
        include = frozenset(p for p in parts if not p.startswith("-"))
        if exclude or not include:
            return cls(None, exclude)
        return cls(include)

    def accepts(self, kind: str) -> bool:
        if self.include is not None:
            return kind in self.include
        return kind not in self.exclude


# ---------------------------------------------------------------------- messages
def container(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One message: ``{"NotificationContainer": {"type": kind, "size": n, <Array>: entries}}``."""
    array = ARRAY_NAMES.get(kind) or kind[:1].upper() + kind[1:] + "Notification"
    return {"NotificationContainer": {"type": kind, "size": len(entries), array: entries}}


def activity_message(
    activity_id: str,
    event: str,
    section_key: int,
    section_title: str,
    progress: int,
    *,
    type: str = "library.update.section",
    subtitle: str = "",
) -> dict[str, Any]:
    title = f"Scanning {section_title}" if type == "library.update.section" else f"Refreshing {section_title}"
    act = {
        "uuid": activity_id,
        "type": type,
        "cancellable": False,
        "userID": 1,
        "title": title,
        "subtitle": subtitle,
        "progress": progress,
        "Context": {"librarySectionID": str(section_key)},
    }
    return container("activity", [{"event": event, "uuid": activity_id, "Activity": act}])


def status_message(title: str, description: str = "") -> dict[str, Any]:
    return container("status", [{"title": title, "description": description, "notificationName": "LIBRARY_UPDATE"}])


def timeline_entry(ev: Event, state: int, metadata_state: str | None, queue_size: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "identifier": LIBRARY_IDENTIFIER,
        "sectionID": str(ev.section_key),
        "itemID": str(ev.rating_key),
        "type": TYPE_NUMBERS[ev.type],
        "title": ev.title,
        "state": state,
        "updatedAt": ev.updated_at,
        "queueSize": queue_size,
    }
    if metadata_state is not None:
        entry["metadataState"] = metadata_state
    if state == 1:
        entry["mediaState"] = "analyzing"
    if ev.parent is not None:
        entry["parentItemID"] = str(ev.parent)
    if ev.root is not None:
        entry["rootItemID"] = str(ev.root)
    return entry


def _chunks(entries: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(entries), size):
        yield entries[i : i + size]


def library_messages(
    events: list[Event],
    section_title: Callable[[int], str],
    *,
    per_container: int = ENTRIES_PER_CONTAINER,
) -> list[dict[str, Any]]:
    """The messages a real server sends for ``events`` (one burst, as during one scan of a section).

    An activity ``library.update.section`` started (progress 0); for new items (state 0 events) a status, their
    ``created`` entries, an ignorable ``backgroundProcessingQueue`` message and their states 1, 3 and 4 followed
    by every other event (5 processed, 9 deleted) in order, grouped up to ``per_container`` entries per message
    with ``updated`` activities in between; a ``progress`` and a status message; the activity ended (100)."""
    if not events:
        return []
    activity_id = str(uuid.uuid4())
    sec = events[0].section_key
    title = section_title(sec)
    created = [ev for ev in events if ev.state == 0]
    others = [ev for ev in events if ev.state != 0]
    messages = [activity_message(activity_id, "started", sec, title, 0)]
    rest: list[dict[str, Any]] = []
    if created:
        messages.append(status_message(f'Scanning the "{title}" section'))
        n = len(created)
        first = [timeline_entry(ev, 0, "created", n - i) for i, ev in enumerate(created)]
        for chunk in _chunks(first, per_container):
            messages.append(container("timeline", chunk))
        messages.append(container("backgroundProcessingQueue", [{"queueID": 1, "event": "queueRegenerated"}]))
        messages.append(activity_message(activity_id, "updated", sec, title, 25, subtitle=f"{n} new items"))
        rest = [
            timeline_entry(ev, state, meta, n - i) for i, ev in enumerate(created) for state, meta in _PROCESSING_STATES
        ]
    rest += [timeline_entry(ev, ev.state, ev.metadata_state) for ev in others]
    chunks = list(_chunks(rest, per_container))
    for i, chunk in enumerate(chunks):
        if i:
            progress = 25 + (75 * i) // len(chunks)
            messages.append(activity_message(activity_id, "updated", sec, title, progress))
        messages.append(container("timeline", chunk))
    if created:
        messages.append(
            container("progress", [{"message": f"Processed {len(created)} items in {title}", "id": activity_id}])
        )
        messages.append(status_message("Library scan complete"))
    messages.append(activity_message(activity_id, "ended", sec, title, 100))
    return messages


# ---------------------------------------------------------------------- connections
@dataclass(eq=False, slots=True)
class Connection:
    """One open notification connection: its filters, its queue of encoded messages, its transport."""

    kind: ConnectionKind
    filters: Filters
    transport: asyncio.Transport | None
    queue: asyncio.Queue[bytes | None]
    opened_at: float = field(default_factory=time.time)
    sent: int = 0
    closed: bool = False

    def finish(self) -> None:
        """Tell the writer to stop (after what is queued is thrown away)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class NotificationHub:
    """Every notification connection of one server, the order they are fed in, and the stream's faults."""

    def __init__(self, *, ping_interval: float = DEFAULT_PING_S, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.ping_interval = ping_interval
        self.queue_size = max(1, queue_size)
        self.connections: set[Connection] = set()
        self._websockets: dict[Connection, web.WebSocketResponse] = {}
        # faults
        self.silent = False
        self.skip = 0
        self.refusing: int | None = None
        # counters
        self.published = 0  # messages published (whether anyone got them or not)
        self.sent = 0  # messages written to connections (one per connection reached)
        self.skipped = 0  # published messages nobody got because of skip
        self.lost = 0  # published while silent
        self.overflowed = 0  # connections dropped because their queue was full
        self.connections_total = 0

    # ------------------------------------------------------------------ state
    def count(self, kind: ConnectionKind) -> int:
        return sum(1 for c in self.connections if c.kind == kind)

    def status(self) -> dict[str, Any]:
        return {
            "websockets": self.count("websocket"),
            "eventsources": self.count("eventsource"),
            "sent": self.sent,
            "skipped": self.skipped,
            "silent": self.silent,
            "refusing": self.refusing,
            "connections_total": self.connections_total,
            "published": self.published,
            "lost": self.lost,
            "overflowed": self.overflowed,
            "skip_pending": self.skip,
            "ping_interval_s": self.ping_interval,
        }

    def reset_faults(self) -> None:
        """No silence, skip or refusal any more (open connections stay)."""
        self.silent = False
        self.skip = 0
        self.refusing = None

    def wants(self) -> bool:
        """Whether publishing would reach anything (a connection, or a pending skip to count down)."""
        return bool(self.connections) or self.skip > 0

    # ------------------------------------------------------------------ publishing
    def publish(self, messages: Iterable[dict[str, Any]]) -> None:
        """Queue ``messages`` for every connection whose filters take them, in order. Never blocks."""
        for message in messages:
            self.published += 1
            if self.silent:
                self.lost += 1
                continue
            if self.skip > 0:
                self.skip -= 1
                self.skipped += 1
                continue
            kind = str(message.get("NotificationContainer", {}).get("type", ""))
            payload: bytes | None = None
            for conn in list(self.connections):
                if not conn.filters.accepts(kind):
                    continue
                if payload is None:
                    payload = orjson.dumps(message)
                self._offer(conn, payload)

    def _offer(self, conn: Connection, payload: bytes) -> None:
        try:
            conn.queue.put_nowait(payload)
        except asyncio.QueueFull:
            # A client that does not keep up: a real server drops it rather than buffer without end.
            self.overflowed += 1
            self._discard(conn)
            conn.abort()
            conn.finish()

    def _add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.connections_total += 1

    def _discard(self, conn: Connection) -> None:
        conn.closed = True
        self.connections.discard(conn)
        self._websockets.pop(conn, None)

    def _new(self, kind: ConnectionKind, request: web.Request) -> Connection:
        return Connection(
            kind, Filters.parse(request.query.get("filters")), request.transport, asyncio.Queue(self.queue_size)
        )

    # ------------------------------------------------------------------ faults
    def drop(self) -> int:
        """Abort every connection with no close frame (a server restart). Returns how many."""
        conns = list(self.connections)
        for conn in conns:
            self._discard(conn)
            conn.abort()
            conn.finish()
        return len(conns)

    async def close_all(self, wait_s: float = 2.0) -> int:
        """Close every connection cleanly (websockets with a close frame, event streams ended)."""
        conns = list(self.connections)
        closing = []
        for conn in conns:
            ws = self._websockets.get(conn)
            self._discard(conn)
            conn.finish()
            if ws is not None:
                closing.append(ws.close())
        if closing:
            try:
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), wait_s)
            except TimeoutError:
                for conn in conns:
                    conn.abort()
        return len(conns)

    def _refused(self) -> web.Response | None:
        if self.refusing is None:
            return None
        headers = {"Retry-After": "1"} if self.refusing == 503 else {}
        text = f"fakeplex refuses notifications ({self.refusing})"
        return web.Response(status=self.refusing, text=text, headers=headers)

    # ------------------------------------------------------------------ endpoints
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``/:/websockets/notifications``. Pings are answered by hand (not while silent); no server heartbeat."""
        refused = self._refused()
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(autoping=False)
        # Registered before the handshake is answered: whatever is published once the client is connected reaches it.
        conn = self._new("websocket", request)
        self._add(conn)
        self._websockets[conn] = ws
        writer: asyncio.Task[None] | None = None
        try:
            await ws.prepare(request)
            if conn.closed:  # closed or dropped during the handshake
                await ws.close()
                return ws
            writer = asyncio.create_task(self._write_ws(conn, ws), name="fakeplex-ws-writer")
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    if not self.silent:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._discard(conn)
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
        return ws

    async def _write_ws(self, conn: Connection, ws: web.WebSocketResponse) -> None:
        while True:
            payload = await conn.queue.get()
            if payload is None:
                return
            if self.silent:
                continue
            try:
                await ws.send_frame(payload, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                self._discard(conn)
                conn.abort()
                return
            conn.sent += 1
            self.sent += 1

    async def eventsource(self, request: web.Request) -> web.StreamResponse:
        """``/:/eventsource/notifications``: ``data: <json>`` events and a ``: ping`` comment every
        ``ping_interval`` seconds (none while silent)."""
        refused = self._refused()
        if refused is not None:
            return refused
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        conn = self._new("eventsource", request)
        self._add(conn)
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval
        try:
            await resp.prepare(request)
            while not conn.closed:
                try:
                    payload = await asyncio.wait_for(conn.queue.get(), max(0.0, next_ping - loop.time()))
                except TimeoutError:
                    next_ping = loop.time() + self.ping_interval
                    if not self.silent:
                        await resp.write(b": ping\n\n")
                    continue
                if payload is None:
                    break
                if self.silent:
                    continue
                await resp.write(b"data: " + payload + b"\n\n")
                conn.sent += 1
                self.sent += 1
        except (ConnectionError, RuntimeError):
            conn.abort()
        finally:
            self._discard(conn)
        if not conn.transport or not conn.transport.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                await resp.write_eof()
        return resp
