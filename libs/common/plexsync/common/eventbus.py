"""NATS JetStream event bus: creates the streams plexsync needs, publishes protobuf messages.

Events (scan and server) go to a limits-retention stream a dashboard can replay; scan jobs go to a
work-queue stream so each job is delivered to exactly one scanner. Every message carries a
`Nats-Msg-Id` (JetStream de-duplicates retries) and W3C trace-context headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError as StreamNotFound
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

log = logging.getLogger(__name__)

EVENT_SUBJECTS = [
    "plexsync.v1.scan.>",
    "plexsync.v1.server.>",
    "plexsync.v1.job.>",
    "plexsync.v1.item.>",
    "plexsync.v1.audit.>",  # plexsync.common.audit: plexsync.v1.audit.<service>.<action>
]
JOB_SUBJECTS = ["plexsync.v1.jobs.>"]
SCAN_JOB_SUBJECT = "plexsync.v1.jobs.scan"
# The durable pull consumer every scanner replica shares, so each job reaches one of them.
SCAN_JOB_CONSUMER = "scanners"
# Core NATS (not kept in a stream): "stop this job" to whichever scanner runs it (events.CancelJobCommand).
JOB_CANCEL_SUBJECT = "plexsync.v1.control.jobs.cancel"
# How long JetStream remembers a Nats-Msg-Id to drop a repeat (the outbox relay relies on it).
DUPLICATE_WINDOW_SECONDS = 120
# What the scheduler's durable consumer of scan events reads (lifecycle only, no progress).
SCAN_LIFECYCLE_SUBJECTS = [f"plexsync.v1.scan.*.{kind}" for kind in ("started", "completed", "failed", "cancelled")]


def scan_subject(library_id: str, kind: str) -> str:
    return f"plexsync.v1.scan.{library_id}.{kind}"


def server_subject(server_id: str, kind: str) -> str:
    return f"plexsync.v1.server.{server_id}.{kind}"


def job_subject(library_id: str, kind: str) -> str:
    """Job lifecycle events: queued, started, finished, requeued."""
    return f"plexsync.v1.job.{library_id}.{kind}"


def item_subject(library_id: str, kind: str) -> str:
    """Item changes the real-time watcher applied: ``changed``."""
    return f"plexsync.v1.item.{library_id}.{kind}"


def max_deliveries_advisory(stream: str, consumer: str) -> str:
    """The subject JetStream announces a message on when `consumer` gave up on it after max_deliver attempts."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


class EventBus:
    """A connection to NATS with JetStream streams ensured."""

    def __init__(self, url: str, *, events_stream: str, jobs_stream: str, events_max_age_hours: float = 168) -> None:
        self.url = url
        self.events_stream = events_stream
        self.jobs_stream = jobs_stream
        self.events_max_age_hours = events_max_age_hours
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("EventBus.connect() has not been called")
        return self._js

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("EventBus.connect() has not been called")
        return self._nc

    async def connect(self, *, attempts: int = 30) -> None:
        """Connect (retrying with backoff) and create or update the streams."""
        for attempt in range(1, attempts + 1):
            try:
                self._nc = await nats.connect(
                    self.url,
                    name="plexsync",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                )
                break
            except Exception as exc:
                if attempt == attempts:
                    raise
                log.warning("NATS not ready, retrying", extra={"attempt": attempt, "error": type(exc).__name__})
                await asyncio.sleep(min(0.5 * attempt, 5.0))
        self._js = self.nc.jetstream()
        await self._ensure_stream(
            StreamConfig(
                name=self.events_stream,
                subjects=EVENT_SUBJECTS,
                retention=RetentionPolicy.LIMITS,
                max_age=self.events_max_age_hours * 3600,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            )
        )
        await self._ensure_stream(
            StreamConfig(
                name=self.jobs_stream,
                subjects=JOB_SUBJECTS,
                retention=RetentionPolicy.WORK_QUEUE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            )
        )

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.stream_info(config.name or "")
            await self.js.update_stream(config)
        except StreamNotFound:
            await self.js.add_stream(config)

    async def publish(self, subject: str, message: Message, *, msg_id: str, timeout_seconds: float = 5.0) -> PubAck:
        """Publish to JetStream with de-duplication id and the current trace context; returns the stream's ack
        (its sequence number; `duplicate` when JetStream had the id already)."""
        return await self.publish_bytes(
            subject, message.SerializeToString(), msg_id=msg_id, timeout_seconds=timeout_seconds
        )

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (publishing while it is down would only queue in the client)."""
        return self._nc is not None and self._nc.is_connected

    async def publish_bytes(self, subject: str, payload: bytes, *, msg_id: str, timeout_seconds: float = 5.0) -> PubAck:
        """`publish` for an already serialized message (the outbox stores the bytes it will send)."""
        with _tracer.start_as_current_span(
            f"publish {_subject_template(subject)}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "publish",
                "messaging.destination.name": subject,
                "messaging.message.id": msg_id,
                "messaging.message.body.size": len(payload),
            },
        ):
            headers: dict[str, str] = {"Nats-Msg-Id": msg_id, "Content-Type": "application/protobuf"}
            propagate.inject(headers)
            return await self.js.publish(subject, payload, timeout=timeout_seconds, headers=headers)

    async def last_msg_id(self, subject: str) -> str | None:
        """The Nats-Msg-Id of the last message stored on `subject` (None when there is none)."""
        stream = await self.js.find_stream_name_by_subject(subject)
        try:
            msg = await self.js.get_last_msg(stream, subject)
        except StreamNotFound:
            return None
        return (msg.headers or {}).get("Nats-Msg-Id")

    async def ensure_job_consumer(self, *, ack_wait_seconds: float, max_deliver: int) -> None:
        """The scanners' shared durable pull consumer of scan jobs, created or brought to this configuration."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            durable_name=SCAN_JOB_CONSUMER,
            filter_subject=SCAN_JOB_SUBJECT,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_seconds,
            max_deliver=max_deliver,
            max_ack_pending=-1,
        )
        await self.js.add_consumer(self.jobs_stream, config)

    async def subscribe(
        self,
        subject: str,
        handler: Callable[[Msg], Awaitable[None]],
        *,
        durable: str | None = None,
        deliver_new: bool = True,
    ) -> Any:
        """A push subscription on the events stream (for watchers and dashboards)."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW if deliver_new else DeliverPolicy.ALL)

        async def traced(msg: Msg) -> None:
            with consume_span(msg):
                await handler(msg)

        return await self.js.subscribe(subject, cb=traced, durable=durable, config=config, manual_ack=False)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self._nc = None
        self._js = None


_tracer = trace.get_tracer(__name__)


def _subject_template(subject: str) -> str:
    """Low-cardinality span name: ids replaced (plexsync.v1.scan.{id}.progress)."""
    parts = subject.split(".")
    if len(parts) == 5 and parts[2] in {"scan", "server", "job"}:
        parts[3] = "{id}"
    return ".".join(parts)


def consume_span(msg: Msg) -> Any:
    """A CONSUMER span for handling `msg`, child of the publisher's span (W3C headers)."""
    context = propagate.extract(dict(msg.headers or {}))
    return _tracer.start_as_current_span(
        f"process {_subject_template(msg.subject)}",
        context=context,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": msg.subject,
            "messaging.message.body.size": len(msg.data),
        },
    )
