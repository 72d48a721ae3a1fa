"""Scan events: built once, kept in the scan's in-process feed (for WatchScan) and published on NATS.

Publishing never blocks or fails a scan. Lifecycle events (started, completed, failed, cancelled) are written
to the scanner's outbox (plexsync.common.outbox) and reach NATS at least once, even if NATS is down while the
scan runs. Progress and item_error events, and the real-time watcher's ItemChangedEvents, are best-effort: an
in-memory queue to one background publisher per process, in order, retried a few times, then dropped (progress
is superseded by the next one; the catalog's WatchChanges is the durable feed of item changes).
JetStream de-duplicates on Nats-Msg-Id = event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from plexsync.common.outbox import OutboxRelay
from plexsync.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "cancelled"})
# Events that go through the outbox: what the scheduler and other consumers must not miss.
LIFECYCLE = TERMINAL | {"started"}
SUBJECT_PREFIX = "plexsync.v1.scan"


class Publisher(Protocol):
    async def publish(self, subject: str, message: Message, *, msg_id: str) -> object: ...


def scan_subject(library_id: str, kind: str) -> str:
    return f"{SUBJECT_PREFIX}.{library_id}.{kind}"


def event_kind(event: events_pb2.ScanEvent) -> str:
    return event.WhichOneof("payload") or ""


class ScanFeed:
    """Every event of one scan, in order; followers get past events, then new ones, until the end."""

    def __init__(self) -> None:
        self.events: list[events_pb2.ScanEvent] = []
        self._changed = asyncio.Condition()
        self.closed = False

    async def append(self, event: events_pb2.ScanEvent) -> None:
        async with self._changed:
            self.events.append(event)
            if event_kind(event) in TERMINAL:
                self.closed = True
            self._changed.notify_all()

    async def follow(self) -> AsyncIterator[events_pb2.ScanEvent]:
        i = 0
        while True:
            async with self._changed:
                while i >= len(self.events) and not self.closed:
                    await self._changed.wait()
                batch = self.events[i:]
            for event in batch:
                yield event
            i += len(batch)
            if self.closed and i >= len(self.events):
                return


PublishedEvent = events_pb2.ScanEvent | events_pb2.ItemChangedEvent


class EventPublisher:
    """One ordered background publisher to NATS for the whole process; lifecycle events through the outbox."""

    def __init__(self, bus: Publisher | None, *, attempts: int = 3, outbox: OutboxRelay | None = None) -> None:
        self._bus = bus
        self._outbox = outbox
        self._attempts = attempts
        self._queue: asyncio.Queue[tuple[str, PublishedEvent, otel_context.Context] | None] = asyncio.Queue(
            maxsize=10_000
        )
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="scan-event-publisher")

    def submit(self, subject: str, event: PublishedEvent) -> None:
        if self._bus is None:
            return
        try:
            # The submitter's trace context travels with the event, so the publish span joins the scan's trace.
            self._queue.put_nowait((subject, event, otel_context.get_current()))
        except asyncio.QueueFull:
            self.dropped += 1

    async def submit_durable(self, subject: str, event: events_pb2.ScanEvent) -> None:
        """Write a lifecycle event to the outbox (its relay publishes it); in memory if there is no outbox."""
        if self._outbox is None:
            self.submit(subject, event)
            return
        try:
            # Shielded: the scan task may be cancelled while it reports its own end.
            await asyncio.shield(self._outbox.enqueue(subject, event, msg_id=event.event_id))
        except Exception as exc:
            log.warning(
                "could not write an event to the outbox; publishing it best-effort",
                extra={"subject": subject, "error": type(exc).__name__},
            )
            self.submit(subject, event)

    async def _run(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            subject, event, trace_context = entry
            for attempt in range(1, self._attempts + 1):
                token = otel_context.attach(trace_context)
                try:
                    assert self._bus is not None
                    await self._bus.publish(subject, event, msg_id=event.event_id)
                    self.published += 1
                    break
                except Exception as exc:
                    if attempt == self._attempts:
                        self.dropped += 1
                        log.warning(
                            "could not publish event",
                            extra={"subject": subject, "error": type(exc).__name__},
                        )
                    else:
                        await asyncio.sleep(0.2 * attempt)
                finally:
                    otel_context.detach(token)

    async def drain(self, wait_seconds: float = 5.0) -> None:
        """Publish what is queued (bounded by ``wait_seconds``), then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), wait_seconds)
        if not self._task.done():
            self._task.cancel()
        self._task = None


class ScanEmitter:
    """Builds one scan's events, appends them to its feed and hands them to the publisher."""

    def __init__(
        self,
        *,
        scan_id: str,
        library_id: str,
        server_id: str,
        mode: common_pb2.ScanMode.ValueType,
        feed: ScanFeed,
        publisher: EventPublisher,
        job_id: str = "",
    ) -> None:
        self.scan_id = scan_id
        self.job_id = job_id
        self.library_id = library_id
        self.server_id = server_id
        self.mode = mode
        self.feed = feed
        self.publisher = publisher

    def _event(self) -> events_pb2.ScanEvent:
        e = events_pb2.ScanEvent(
            event_id=str(uuid.uuid4()),
            scan_id=self.scan_id,
            library_id=self.library_id,
            server_id=self.server_id,
            mode=self.mode,
            job_id=self.job_id,
        )
        e.time.FromNanoseconds(time.time_ns())
        return e

    async def _emit(self, event: events_pb2.ScanEvent) -> events_pb2.ScanEvent:
        await self.feed.append(event)
        kind = event_kind(event)
        if kind in LIFECYCLE:
            await self.publisher.submit_durable(scan_subject(self.library_id, kind), event)
        else:
            self.publisher.submit(scan_subject(self.library_id, kind), event)
        return event

    async def started(
        self,
        library_name: str,
        library_kind: common_pb2.LibraryKind.ValueType,
        *,
        replica: str,
        attempt: int,
        force: bool,
    ) -> None:
        e = self._event()
        e.started.CopyFrom(
            events_pb2.ScanStarted(
                library_name=library_name,
                library_kind=library_kind,
                job_id=self.job_id,
                replica=replica,
                attempt=attempt,
                force=force,
            )
        )
        await self._emit(e)

    async def progress(self, counts: common_pb2.ScanCounts, rate: float, eta: float | None, phase: str) -> None:
        e = self._event()
        e.progress.counts.CopyFrom(counts)
        e.progress.items_per_second = rate
        e.progress.phase = phase
        if eta is not None:
            e.progress.eta.FromMilliseconds(int(eta * 1000))
        await self._emit(e)

    async def item_error(self, rating_key: str, title: str, message: str, http_status: int) -> None:
        e = self._event()
        e.item_error.CopyFrom(
            events_pb2.ScanItemError(rating_key=rating_key, title=title, message=message, http_status=http_status)
        )
        await self._emit(e)

    async def completed(self, counts: common_pb2.ScanCounts, duration: float, stats: common_pb2.ScanStats) -> None:
        e = self._event()
        e.completed.counts.CopyFrom(counts)
        e.completed.duration.FromMilliseconds(int(duration * 1000))
        e.completed.stats.CopyFrom(stats)
        await self._emit(e)

    async def failed(
        self, counts: common_pb2.ScanCounts, error: str, server_name: str, code: str, stats: common_pb2.ScanStats
    ) -> None:
        e = self._event()
        e.failed.CopyFrom(
            events_pb2.ScanFailed(counts=counts, error=error, server_name=server_name, code=code, stats=stats)
        )
        await self._emit(e)

    async def cancelled(
        self, counts: common_pb2.ScanCounts, reason: str, stats: common_pb2.ScanStats, *, requeued: bool = False
    ) -> None:
        e = self._event()
        e.cancelled.CopyFrom(events_pb2.ScanCancelled(counts=counts, reason=reason, stats=stats, requeued=requeued))
        await self._emit(e)
