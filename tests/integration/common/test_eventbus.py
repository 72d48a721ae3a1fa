"""EventBus against a real NATS JetStream server: streams created, de-duplication, trace headers."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from plexsync.common.eventbus import EventBus, scan_subject
from plexsync.v1 import events_pb2


async def test_publish_creates_streams_dedups_and_carries_traceparent(nats_url: str) -> None:
    suffix = uuid.uuid4().hex[:8].upper()
    # The streams are shared by every service (subjects may not overlap between streams), so use the real names.
    bus = EventBus(nats_url, events_stream="PLEXSYNC_EVENTS", jobs_stream="PLEXSYNC_JOBS")
    bus_subject = scan_subject(f"lib{suffix}", "started")
    await bus.connect()
    try:
        info = await bus.js.stream_info("PLEXSYNC_EVENTS")
        assert "plexsync.v1.scan.>" in (info.config.subjects or [])
        jobs = await bus.js.stream_info("PLEXSYNC_JOBS")
        assert str(jobs.config.retention) in {"workqueue", "RetentionPolicy.WORK_QUEUE"}

        received: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            await received.put(msg)

        await bus.subscribe(bus_subject, on_message)
        msg_id = f"e-{suffix}"
        event = events_pb2.ScanEvent(event_id=msg_id, scan_id="s1", library_id=f"lib{suffix}")
        provider = TracerProvider()
        with provider.get_tracer("test").start_as_current_span("publish"):
            span_id = trace.get_current_span().get_span_context().trace_id
            await bus.publish(bus_subject, event, msg_id=msg_id)
            await bus.publish(bus_subject, event, msg_id=msg_id)  # a retry: JetStream drops the duplicate
        msg = await asyncio.wait_for(received.get(), 5)
        assert events_pb2.ScanEvent.FromString(msg.data).scan_id == "s1"
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == msg_id
        assert format(span_id, "032x") in msg.headers["traceparent"]
        await asyncio.sleep(0.3)
        assert received.empty()
    finally:
        await bus.close()
