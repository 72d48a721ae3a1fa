"""Scan events: built once, kept in the scan's in-process feed (for WatchScan) and published on NATS.

Publishing never blocks or fails a scan. Lifecycle events (started, completed, failed, cancelled) are written
to the scanner's outbox (plexsync.common.outbox) and reach NATS at least once, even if NATS is down while the
scan runs. Progress and item_error events, and the real-time watcher's ItemChangedEvents, are best-effort: an
in-memory queue to one background publisher per process, in order, retried a few times, then dropped (progress
is superseded by the next one; the catalog's WatchChanges is the durable feed of item changes).
JetStream de-duplicates on Nats-Msg-Id = event_id.

A scan whose scanner died ends without its scanner: the replica that reaps it (repository.ScanRepository.reap)
writes its `failed` event (`reaped_failed_event`, built like any other failed event) to the outbox in the same
transaction as the row's FAILED status, with an event_id derived from the scan id.
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


# Namespace of the event ids of reaped scans' `failed` events (uuid5 of the scan id): every reaper builds the same.
REAPED_EVENT_NAMESPACE = uuid.UUID("5d0f3c1e-7a43-4d2b-9a55-3f1e0c7b9a21")
# The gRPC code name a reaped scan's `failed` event carries: the scan was aborted with its scanner; the scheduler
# requeues its job (JetStream redelivers it to another scanner) rather than failing it.
REAPED_CODE = "ABORTED"


def new_event(
    *,
    scan_id: str,
    library_id: str,
    server_id: str,
    mode: common_pb2.ScanMode.ValueType,
    job_id: str = "",
    event_id: str = "",
) -> events_pb2.ScanEvent:
    """A scan's event without payload, stamped now; a random event_id unless one is given."""
    e = events_pb2.ScanEvent(
        event_id=event_id or str(uuid.uuid4()),
        scan_id=scan_id,
        library_id=library_id,
        server_id=server_id,
        mode=mode,
        job_id=job_id,
    )
    e.time.FromNanoseconds(time.time_ns())
    return e


def set_failed(
    event: events_pb2.ScanEvent,
    counts: common_pb2.ScanCounts,
    error: str,
    server_name: str,
    code: str,
    stats: common_pb2.ScanStats,
) -> events_pb2.ScanEvent:
    """Make `event` a `failed` event (the one builder of ScanFailed payloads)."""
    event.failed.CopyFrom(
        events_pb2.ScanFailed(counts=counts, error=error, server_name=server_name, code=code, stats=stats)
    )
    return event


def reaped_event_id(scan_id: str) -> str:
    """The event_id of a reaped scan's `failed` event: the same for every reaper, so JetStream drops a repeat."""
    return str(uuid.uuid5(REAPED_EVENT_NAMESPACE, scan_id))


def reaped_failed_event(
    *,
    scan_id: str,
    library_id: str,
    server_id: str,
    mode: common_pb2.ScanMode.ValueType,
    job_id: str,
    counts: common_pb2.ScanCounts,
    stats: common_pb2.ScanStats,
    error: str,
) -> events_pb2.ScanEvent:
    """The `failed` event of a scan whose scanner died: its last persisted counts and stats, the reaper's reason,
    code `REAPED_CODE` and a deterministic event_id (`reaped_event_id`)."""
    event = new_event(
        scan_id=scan_id,
        library_id=library_id,
        server_id=server_id,
        mode=mode,
        job_id=job_id,
        event_id=reaped_event_id(scan_id),
    )
    return set_failed(event, counts, error, "", REAPED_CODE, stats)


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
        return new_event(
            scan_id=self.scan_id,
            library_id=self.library_id,
            server_id=self.server_id,
            mode=self.mode,
            job_id=self.job_id,
        )

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
        await self._emit(set_failed(self._event(), counts, error, server_name, code, stats))

    async def cancelled(
        self, counts: common_pb2.ScanCounts, reason: str, stats: common_pb2.ScanStats, *, requeued: bool = False
    ) -> None:
        e = self._event()
        e.cancelled.CopyFrom(events_pb2.ScanCancelled(counts=counts, reason=reason, stats=stats, requeued=requeued))
        await self._emit(e)
