"""One trace per sync: a scan started by ScanLibrary is one trace across scanner, auth, catalog, Plex HTTP calls,
SQL and NATS, exported over OTLP to a real receiver, with no Plex token anywhere in it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from plexsync.auth.crypto import new_key
from plexsync.common.eventbus import EventBus
from plexsync.devstack.process import ChildProcess, start_fakeplex
from plexsync.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    scanner_pb2,
    scanner_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.stack import ServiceStack

SERVER_KIND, CLIENT_KIND, PRODUCER_KIND, CONSUMER_KIND = 2, 3, 4, 5  # OTLP Span.SpanKind values


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as store:
        yield store


@pytest.fixture(scope="module")
def fakeplex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChildProcess, dict[str, Any]]]:
    log = Path(tmp_path_factory.mktemp("fakeplex")) / "fakeplex.log"
    args = ["--host", "127.0.0.1", "--port", "0", "--movies", "40", "--shows", "0", "--other-videos", "0",
            "--remote-host", "", "--relay-listen", ""]  # fmt: skip
    child, info = start_fakeplex(args, log)
    try:
        yield child, info
    finally:
        child.stop(timeout=5)


@pytest.fixture(scope="module")
def stack(
    service_stack: ServiceStack, receiver: OtlpReceiver, fakeplex: tuple[ChildProcess, dict[str, Any]]
) -> Iterator[ServiceStack]:
    service_stack.extra_env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "PLEXSYNC_PLEX_TV_URL": fakeplex[1]["url"],
            "PLEXSYNC_TOKEN_KEYS": f"k1:{new_key()}",
        }
    )
    for name in ("catalog", "auth", "scanner", "scheduler"):
        service_stack.reserve(name)
    for name in ("catalog", "auth", "scanner"):
        service_stack.start(name)
    service_stack.start("scheduler", PLEXSYNC_SCHEDULER_TICK_SECONDS="0.5", PLEXSYNC_SCHEDULER_RECONCILE_SECONDS="1")
    yield service_stack
    service_stack.stop_all()  # flushes the services' exporters while the receiver still runs


def _trace_spans(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.snapshot() if s.trace_id == trace_id]


async def test_scan_library_is_one_trace(
    stack: ServiceStack, receiver: OtlpReceiver, fakeplex: tuple[ChildProcess, dict[str, Any]], nats_url: str
) -> None:
    info = fakeplex[1]
    async with stack.channel("auth", "cli") as channel:
        added = await auth_pb2_grpc.AuthServiceStub(channel).AddServer(
            auth_pb2.AddServerRequest(url=info["url"], token=info["token"])
        )
    async with stack.channel("scanner") as channel:
        synced = await scanner_pb2_grpc.ScannerServiceStub(channel).SyncServer(
            scanner_pb2.SyncServerRequest(server_id=added.server.id)
        )
    library = next(lib for lib in synced.libraries if lib.kind == common_pb2.LIBRARY_KIND_MOVIES)

    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-caller"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("e2e")

    consumed: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        await consumed.put(msg)

    bus = EventBus(nats_url, events_stream="PLEXSYNC_EVENTS", jobs_stream="PLEXSYNC_JOBS")
    await bus.connect()
    try:
        await bus.subscribe(f"plexsync.v1.scan.{library.id}.completed", on_event)
        with tracer.start_as_current_span("caller: scan the movies") as root:
            trace_id = format(root.get_span_context().trace_id, "032x")
            async with stack.channel("scanner") as channel:
                stub = scanner_pb2_grpc.ScannerServiceStub(channel)
                started = await stub.ScanLibrary(
                    scanner_pb2.ScanLibraryRequest(library_id=library.id, mode=common_pb2.SCAN_MODE_INCREMENTAL)
                )
                kinds_seen = [
                    reply.event.WhichOneof("payload")
                    async for reply in stub.WatchScan(scanner_pb2.WatchScanRequest(scan_id=started.scan.id))
                ]
                assert kinds_seen[-1] == "completed", kinds_seen
        await asyncio.wait_for(consumed.get(), 10)
    finally:
        await bus.close()
    provider.shutdown()

    wanted = {"scanner", "auth", "catalog", "e2e-caller"}
    deadline = time.monotonic() + 30
    spans = _trace_spans(receiver, trace_id)
    while time.monotonic() < deadline:
        spans = _trace_spans(receiver, trace_id)
        kinds = {s.kind for s in spans}
        has_sql = any({"db.system", "db.system.name"} & set(s.attributes) for s in spans)
        ids = {s.span_id for s in spans}
        complete = all(not s.parent_span_id or s.parent_span_id in ids for s in spans)
        if wanted <= {s.service for s in spans} and has_sql and {PRODUCER_KIND, CONSUMER_KIND} <= kinds and complete:
            break
        await asyncio.sleep(0.2)
    services = {s.service for s in spans}
    assert wanted <= services, f"services in the trace: {services}"

    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [r.name for r in roots] == ["caller: scan the movies"], "exactly one root: the caller's span"
    orphans = [s.name for s in spans if s.parent_span_id and s.parent_span_id not in by_id]
    assert not orphans, f"spans whose parent is not in the trace: {orphans[:10]}"

    def ancestors(span: ReceivedSpan) -> list[ReceivedSpan]:
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span)
        return chain

    scan_span = next(s for s in spans if s.service == "scanner" and s.name == "scan")
    assert scan_span.attributes["plexsync.scan.id"] == started.scan.id
    assert scan_span.attributes["plexsync.library.id"] == library.id
    assert scan_span.attributes["plexsync.scan.mode"] == "incremental"
    assert scan_span.attributes["plexsync.items.added"] == 40
    assert any(a.service == "scanner" and a.kind == SERVER_KIND for a in ancestors(scan_span))

    http_spans = [s for s in spans if s.service == "scanner" and s.kind == CLIENT_KIND
                  and {"http.request.method", "http.method"} & set(s.attributes)]  # fmt: skip
    names = sorted({(s.service, s.name) for s in spans})
    assert http_spans, f"Plex HTTP calls are in the trace: {names}"
    assert all(scan_span in ancestors(s) for s in http_spans)

    credentials = [s for s in spans if s.service == "auth" and s.kind == SERVER_KIND]
    assert any("GetServerCredentials" in s.name for s in credentials)
    for server_span in credentials:
        parent = by_id[server_span.parent_span_id]
        assert parent.service == "scanner" and parent.kind == CLIENT_KIND

    writes = [s for s in spans if s.service == "catalog" and s.kind == SERVER_KIND and "WriteItems" in s.name]
    assert writes, "catalog WriteItems is in the trace"
    assert by_id[writes[0].parent_span_id].service == "scanner"
    sql = [
        s for s in spans if s.service == "catalog" and ("db.system" in s.attributes or "db.system.name" in s.attributes)
    ]
    assert sql, "catalog SQL statements are in the trace"
    assert all(any(a.service == "catalog" and a.kind == SERVER_KIND for a in ancestors(s)) for s in sql)

    publishes = [s for s in spans if s.kind == PRODUCER_KIND and s.service == "scanner"]
    consumes = [s for s in spans if s.kind == CONSUMER_KIND]
    assert publishes and consumes
    assert all(s.attributes.get("messaging.system") == "nats" for s in publishes + consumes)
    assert any(by_id[c.parent_span_id] in publishes for c in consumes), "consumer spans continue the publisher's"

    expected_metrics = {"plexsync.scan.duration", "plexsync.scan.items", "plexsync.scans.running",
                        "plexsync.plex.request.duration", "plexsync.catalog.batch.duration"}  # fmt: skip
    for _ in range(50):  # metrics export every 0.5 s
        if expected_metrics <= receiver.metric_names:
            break
        await asyncio.sleep(0.2)
    assert expected_metrics <= receiver.metric_names, f"metrics exported: {sorted(receiver.metric_names)}"
    correlated = [entry for entry in receiver.logs if entry["trace_id"] == trace_id]
    assert {entry["service"] for entry in correlated} >= {"scanner"}, "scan logs carry the scan's trace id"

    token = info["token"]
    assert all(token.encode() not in raw for raw in receiver.raw), "the Plex token was exported"
    for log_file in stack.log_dir.glob("*.log"):
        assert token not in log_file.read_text(errors="replace"), f"the Plex token is in {log_file.name}"


async def test_a_scheduled_scan_is_one_trace_from_the_scheduler_to_sql(
    stack: ServiceStack, receiver: OtlpReceiver, fakeplex: tuple[ChildProcess, dict[str, Any]]
) -> None:
    """No caller at all: the scheduler's tick is the root, and the scan it hands over continues its trace."""
    async with stack.channel("catalog") as channel:
        libraries = await catalog_pb2_grpc.CatalogServiceStub(channel).ListLibraries(catalog_pb2.ListLibrariesRequest())
    library = next(lib for lib in libraries.libraries if lib.kind == common_pb2.LIBRARY_KIND_MOVIES)
    async with stack.channel("scheduler", "cli") as channel:
        scheduler = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        await scheduler.UpdateSchedule(
            scheduler_pb2.UpdateScheduleRequest(
                schedule=scheduler_pb2.Schedule(
                    library_id=library.id, refresh_interval=duration_pb2.Duration(seconds=10)
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["refresh_interval"]),
            )
        )
        job = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and job is None:
            listed = await scheduler.ListJobs(scheduler_pb2.ListJobsRequest(library_id=library.id))
            job = next((j for j in listed.jobs if j.trigger == common_pb2.JOB_TRIGGER_SCHEDULED
                        and j.status == common_pb2.JOB_STATUS_SUCCEEDED), None)  # fmt: skip
            await asyncio.sleep(0.5)
        assert job is not None, "a scheduled job succeeded"
    assert job.trace_id
    deadline = time.monotonic() + 30
    spans = _trace_spans(receiver, job.trace_id)
    while time.monotonic() < deadline:
        spans = _trace_spans(receiver, job.trace_id)
        if {"scheduler", "scanner", "auth", "catalog"} <= {s.service for s in spans} and any(
            "db.system" in s.attributes or "db.system.name" in s.attributes for s in spans
        ):
            break
        await asyncio.sleep(0.2)
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [(r.service, r.name) for r in roots] == [("scheduler", "schedule library")], [
        (r.service, r.name) for r in roots
    ]
    assert not [s.name for s in spans if s.parent_span_id and s.parent_span_id not in by_id], "no orphans"
    scan = next(s for s in spans if s.service == "scanner" and s.name == "scan")
    assert scan.attributes["plexsync.scan.id"] == job.scan_id
    consume = by_id[scan.parent_span_id]
    while consume.kind != CONSUMER_KIND and consume.parent_span_id in by_id:
        consume = by_id[consume.parent_span_id]
    assert consume.kind == CONSUMER_KIND and by_id[consume.parent_span_id].service == "scheduler"
    assert any(s.service == "scanner" and s.kind == CLIENT_KIND and {"http.request.method", "http.method"}
               & set(s.attributes) for s in spans), "Plex HTTP calls"  # fmt: skip
    assert any(s.service == "catalog" and ("db.system" in s.attributes or "db.system.name" in s.attributes)
               for s in spans), "SQL"  # fmt: skip
    scheduler_metrics = {"plexsync.jobs.queue.depth", "plexsync.job.lag", "plexsync.job.duration"}
    for _ in range(50):  # metrics export every 0.5 s
        if scheduler_metrics <= receiver.metric_names:
            break
        await asyncio.sleep(0.2)
    assert scheduler_metrics <= receiver.metric_names, f"metrics exported: {sorted(receiver.metric_names)}"
