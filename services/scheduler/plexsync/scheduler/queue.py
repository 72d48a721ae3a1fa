"""The scheduler's side of NATS: the scanners' work queue, job events, and what the scanners report back.

Job events go through the scheduler's outbox (plexsync.common.outbox): written to PostgreSQL, then published by
the relay, so a job event is not lost while NATS is down. Job messages need no outbox: the job row is one (a
QUEUED job without a stream sequence is published again by the leader's reconcile, the job id de-duplicating).
Scan lifecycle events are read through one durable pull consumer that every scheduler replica shares (each
event is handled once, and none is lost while the schedulers are down); JetStream's max-deliveries advisory
says when a job's deliveries are used up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate
from plexsync.common.eventbus import (
    JOB_CANCEL_SUBJECT,
    SCAN_JOB_CONSUMER,
    SCAN_JOB_SUBJECT,
    SCAN_LIFECYCLE_SUBJECTS,
    EventBus,
    consume_span,
    job_subject,
    max_deliveries_advisory,
)
from plexsync.common.outbox import OutboxRelay
from plexsync.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)

SCAN_EVENTS_CONSUMER = "scheduler-scan-events"


class JetStreamJobQueue:
    """JobQueue (ports) over an EventBus."""

    def __init__(self, bus: EventBus, outbox: OutboxRelay) -> None:
        self.bus = bus
        self.outbox = outbox

    async def publish_job(self, job: common_pb2.Job, traceparent: str) -> int:
        if not self.bus.connected:
            # Fail now rather than have the client buffer it: the reconcile publishes it once NATS is back.
            raise ConnectionError("not connected to NATS")
        message = events_pb2.ScanJobMessage(
            job_id=job.id, library_id=job.library_id, mode=job.mode, force=job.force, server_id=job.server_id
        )
        message.enqueue_time.GetCurrentTime()
        parent = propagate.extract({"traceparent": traceparent}) if traceparent else otel_context.get_current()
        token = otel_context.attach(parent)
        try:
            ack = await self.bus.publish(SCAN_JOB_SUBJECT, message, msg_id=job.id)
        finally:
            otel_context.detach(token)
        return int(ack.seq)

    async def remove_job(self, stream_seq: int) -> None:
        await self.bus.js.delete_msg(self.bus.jobs_stream, stream_seq)

    async def request_cancel(self, job_id: str, reason: str) -> None:
        command = events_pb2.CancelJobCommand(job_id=job_id, reason=reason)
        await self.bus.nc.publish(JOB_CANCEL_SUBJECT, command.SerializeToString())

    async def job_event(self, kind: str, job: common_pb2.Job) -> None:
        event = events_pb2.JobEvent(event_id=str(uuid.uuid4()), job=job)
        event.time.GetCurrentTime()
        await self.outbox.enqueue(job_subject(job.library_id, kind), event, msg_id=event.event_id)


class ScanReports:
    """Feeds the scanners' lifecycle events and JetStream's give-ups to the domain, until closed."""

    def __init__(
        self,
        bus: EventBus,
        on_event: Callable[[events_pb2.ScanEvent], Awaitable[None]],
        on_exhausted: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.on_event = on_event
        self.on_exhausted = on_exhausted
        self._task: asyncio.Task[None] | None = None
        self._advisory: Any = None
        self._subscription: Any = None

    async def start(self) -> None:
        config = ConsumerConfig(
            durable_name=SCAN_EVENTS_CONSUMER,
            filter_subjects=SCAN_LIFECYCLE_SUBJECTS,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=30,
            max_deliver=20,
        )
        await self.bus.js.add_consumer(self.bus.events_stream, config)
        subscription = await self.bus.js.pull_subscribe("", durable=SCAN_EVENTS_CONSUMER, stream=self.bus.events_stream)

        async def exhausted(msg: Msg) -> None:
            try:
                data = json.loads(msg.data)
                await self.on_exhausted(int(data["stream_seq"]), int(data.get("deliveries", 0)))
            except Exception:
                log.exception("could not handle a max-deliveries advisory")

        self._advisory = await self.bus.nc.subscribe(
            max_deliveries_advisory(self.bus.jobs_stream, SCAN_JOB_CONSUMER), cb=exhausted
        )
        self._subscription = subscription
        self._task = asyncio.create_task(self._pull(subscription), name="scan-reports")

    async def _pull(self, subscription: object) -> None:
        fetch = subscription.fetch  # type: ignore[attr-defined]
        while True:
            try:
                messages = await fetch(50, timeout=1)
            except (NatsTimeout, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not read scan events; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(1)
                continue
            for msg in messages:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            event = events_pb2.ScanEvent.FromString(msg.data)
        except Exception:
            log.warning("dropping a scan event that does not parse", extra={"subject": msg.subject})
            await msg.term()
            return
        try:
            with consume_span(msg):
                await self.on_event(event)
        except Exception:
            log.exception("could not record a scan event; it will be delivered again",
                          extra={"scan_id": event.scan_id})  # fmt: skip
            await msg.nak(delay=1)
            return
        await msg.ack()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        # Unsubscribed here, so the connection's drain at shutdown has nothing of ours left to wait for.
        for sub in (self._subscription, self._advisory):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()


class ChangeFeed:
    """Job events (and scan progress) as they are published, from any replica (core NATS subscriptions)."""

    def __init__(self, bus: EventBus, *, include_progress: bool) -> None:
        self.bus = bus
        self.include_progress = include_progress
        self._queue: asyncio.Queue[tuple[str, events_pb2.JobEvent | events_pb2.ScanEvent]] = asyncio.Queue(
            maxsize=10_000
        )
        self._subscriptions: list[Any] = []

    async def start(self) -> None:
        async def on_job(msg: Msg) -> None:
            kind = msg.subject.rsplit(".", 1)[-1]
            with contextlib.suppress(Exception, asyncio.QueueFull):
                self._queue.put_nowait((kind, events_pb2.JobEvent.FromString(msg.data)))

        async def on_progress(msg: Msg) -> None:
            with contextlib.suppress(Exception, asyncio.QueueFull):
                self._queue.put_nowait(("progress", events_pb2.ScanEvent.FromString(msg.data)))

        self._subscriptions.append(await self.bus.nc.subscribe("plexsync.v1.job.*.*", cb=on_job))
        if self.include_progress:
            self._subscriptions.append(await self.bus.nc.subscribe("plexsync.v1.scan.*.progress", cb=on_progress))
        await self.bus.nc.flush()

    async def next(self) -> tuple[str, events_pb2.JobEvent | events_pb2.ScanEvent]:
        return await self._queue.get()

    async def close(self) -> None:
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subscriptions.clear()
