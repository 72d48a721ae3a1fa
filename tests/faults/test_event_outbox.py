"""Lifecycle events reach NATS at least once, in order, even when NATS is down while the scan runs.

A private NATS server (so it can be stopped and started again on the same port and store), real catalog, auth and
scanner processes and fakeplex. Scans run to their end with NATS down; once NATS is back, a JetStream subscriber
sees each scan's started and terminal events exactly once, in order. Then the relay itself: two relays sharing one
outbox publish every row once, in id order, and a row whose earlier send may have landed past JetStream's
de-duplication window is not sent again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy
from plexsync.common.db import create_engine, libpq_url, schema_metadata, sqlalchemy_url
from plexsync.common.eventbus import EventBus
from plexsync.common.outbox import OutboxColumns, OutboxRelay, add
from plexsync.fakeplex import FakePlexControl
from plexsync.v1 import auth_pb2, auth_pb2_grpc, common_pb2, events_pb2, scanner_pb2, scanner_pb2_grpc
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.orm import DeclarativeBase

from tests.faults.harness import LIFECYCLE, PrivateNats
from tests.integration.scanner.support import fakeplex_process, run_scan
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(90)

SCANNER_ENV = {
    "PLEXSYNC_PLEX_MAX_RETRIES": "1",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_SCAN_PROGRESS_INTERVAL_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNats]:
    root = tmp_path_factory.mktemp("outbox-nats")
    server = PrivateNats(root / "store", root / "nats.log")
    server.start()
    try:
        yield server
    finally:
        if server.pid:
            server.stop()


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    args = ("--movies", "30", "--shows", "2", "--seasons", "1", "--episodes", "3", "--other-videos", "0")
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), *args) as info:
        yield info


@pytest.fixture(scope="module")
def stack(
    database_url: str, private_nats: PrivateNats, fake: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    services = ServiceStack(
        database_url=database_url, nats_url=private_nats.url, log_dir=Path(tmp_path_factory.mktemp("outbox-logs"))
    )
    services.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        for name in ("catalog", "auth", "scanner"):
            services.reserve(name)
        services.start("catalog")
        services.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
        services.start("scanner", **SCANNER_ENV)
        yield services
    finally:
        services.stop_all()


@pytest.fixture(scope="module")
async def scanner_channel(stack: ServiceStack) -> AsyncIterator[grpc.aio.Channel]:
    channel = stack.channel("scanner")
    yield channel
    await channel.close()


@pytest.fixture(scope="module")
async def libraries(stack: ServiceStack, scanner_channel: grpc.aio.Channel, fake: dict[str, Any]) -> dict[str, str]:
    """Plex section key -> library id, the server added and its libraries registered."""
    channel = stack.channel("auth")
    try:
        added = await auth_pb2_grpc.AuthServiceStub(channel).AddServer(
            auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Outbox Plex")
        )
    finally:
        await channel.close()
    scanner = scanner_pb2_grpc.ScannerServiceStub(scanner_channel)
    synced = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=added.server.id))
    return {lib.plex_key: lib.id for lib in synced.libraries}


def outbox_depth(database_url: str, schema: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.outbox").fetchone()
    return int(row[0]) if row else 0


async def stream_events(nats_url: str, subject: str, *, until: Any, within: float) -> list[events_pb2.ScanEvent]:
    """Every ScanEvent stored on `subject` from the stream's start, read until `until(events)` or `within` s."""
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    events: list[events_pb2.ScanEvent] = []
    enough = asyncio.Event()

    async def on_message(msg: Any) -> None:
        events.append(events_pb2.ScanEvent.FromString(msg.data))
        if until(events):
            enough.set()

    try:
        sub = await nc.jetstream().subscribe(
            subject, cb=on_message, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL), manual_ack=False
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), within)
        await asyncio.sleep(0.5)  # a repeat would arrive right behind the original
        await sub.unsubscribe()
    finally:
        await nc.close()
    return events


def kinds_of(events: list[events_pb2.ScanEvent], scan_id: str) -> list[str]:
    return [k for e in events if e.scan_id == scan_id and (k := e.WhichOneof("payload") or "") in LIFECYCLE]


async def test_scan_lifecycle_events_published_while_nats_was_down_arrive_once_in_order(
    stack: ServiceStack,
    scanner_channel: grpc.aio.Channel,
    libraries: dict[str, str],
    private_nats: PrivateNats,
    fake: dict[str, Any],
    database_url: str,
) -> None:
    movies, shows = libraries["1"], libraries["2"]
    private_nats.stop()
    try:
        health = health_pb2_grpc.HealthStub(scanner_channel)
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == health_pb2.HealthCheckResponse.SERVING  # events wait in the outbox

        good, good_feed = await run_scan(scanner_channel, movies, wait=30)
        assert good.status == common_pb2.SCAN_STATUS_COMPLETED, good
        async with FakePlexControl(fake["url"]) as control:
            await control.add_fault("error", status=500, path_prefix="/library/sections/2/all")
            try:
                bad, bad_feed = await run_scan(scanner_channel, shows, wait=30)
            finally:
                await control.clear_faults()
        assert bad.status == common_pb2.SCAN_STATUS_FAILED, bad
        # Both scans' started and terminal events wait for NATS in the scanner's outbox.
        assert outbox_depth(database_url, "scanner") == 4
    finally:
        private_nats.start()

    def both_ended(events: list[events_pb2.ScanEvent]) -> bool:
        return kinds_of(events, good.id)[-1:] == ["completed"] and kinds_of(events, bad.id)[-1:] == ["failed"]

    events = await stream_events(private_nats.url, "plexsync.v1.scan.*.*", until=both_ended, within=10)
    assert kinds_of(events, good.id) == ["started", "completed"], kinds_of(events, good.id)
    assert kinds_of(events, bad.id) == ["started", "failed"], kinds_of(events, bad.id)
    published = [e for e in events if e.scan_id in (good.id, bad.id) and e.WhichOneof("payload") in LIFECYCLE]
    assert len({e.event_id for e in published}) == len(published) == 4
    # The very events WatchScan showed, not rebuilt ones: a consumer deduping by event_id sees each once.
    watched = {e.event_id for e in (*good_feed, *bad_feed) if e.WhichOneof("payload") in LIFECYCLE}
    assert {e.event_id for e in published} == watched
    assert outbox_depth(database_url, "scanner") == 0


class RelayTestBase(DeclarativeBase):
    metadata = schema_metadata("outbox_relay_t")


class RelayTestRow(OutboxColumns, RelayTestBase):
    """An outbox of the test's own, beside the services' schemas."""


class CountingBus:
    """The real EventBus, counting what the relay sends."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.sent: list[str] = []

    @property
    def connected(self) -> bool:
        return self.bus.connected

    async def publish_bytes(self, subject: str, payload: bytes, *, msg_id: str) -> object:
        self.sent.append(msg_id)
        return await self.bus.publish_bytes(subject, payload, msg_id=msg_id)

    async def last_msg_id(self, subject: str) -> str | None:
        return await self.bus.last_msg_id(subject)


def scan_event(library_id: str, index: int) -> events_pb2.ScanEvent:
    event = events_pb2.ScanEvent(event_id=str(uuid.uuid4()), scan_id=str(index), library_id=library_id)
    event.started.library_name = "relay test"
    return event


async def test_two_relays_publish_each_row_once_in_order_and_skip_what_landed_before(
    database_url: str, private_nats: PrivateNats
) -> None:
    sync_engine = create_sync_engine(sqlalchemy_url(database_url))
    with sync_engine.begin() as setup:
        setup.exec_driver_sql('CREATE SCHEMA IF NOT EXISTS "outbox_relay_t"')
        RelayTestBase.metadata.create_all(setup)
    sync_engine.dispose()
    library = f"relay-{uuid.uuid4().hex[:8]}"
    subject = f"plexsync.v1.scan.{library}.started"
    engines = [create_engine(database_url, schema="outbox_relay_t", pool_size=2) for _ in range(2)]
    buses = [EventBus(private_nats.url, events_stream="PLEXSYNC_EVENTS", jobs_stream="PLEXSYNC_JOBS") for _ in range(2)]
    for bus in buses:
        await bus.connect()
    counting = [CountingBus(bus) for bus in buses]
    relays = [OutboxRelay(e, b, schema="outbox_relay_t", batch_size=7) for e, b in zip(engines, counting, strict=True)]
    try:
        # A row whose publish went out an hour ago without an ack, and did land: past the duplicate window,
        # only the relay's look at the stream keeps it from being stored twice.
        landed = scan_event(library, 0)
        await buses[0].publish(subject, landed, msg_id=landed.event_id)
        async with engines[0].begin() as conn:
            await add(conn, subject, landed, landed.event_id)
            await conn.exec_driver_sql("UPDATE outbox SET sent_at = now() - interval '1 hour', attempts = 1")
        for relay in relays:
            relay.start()
        written = [landed]
        for i in range(1, 61):
            event = scan_event(library, i)
            async with engines[i % 2].begin() as conn:  # writers in "both replicas"
                await add(conn, subject, event, event.event_id)
            written.append(event)
            if i % 10 == 0:
                await asyncio.sleep(0.05)

        def all_there(events: list[events_pb2.ScanEvent]) -> bool:
            return len(events) >= len(written)

        events = await stream_events(private_nats.url, subject, until=all_there, within=10)
        assert [e.event_id for e in events] == [e.event_id for e in written]
        sent = [m for c in counting for m in c.sent]
        assert landed.event_id not in sent
        assert sorted(sent) == sorted(e.event_id for e in written[1:])  # each once, across both relays
        assert outbox_depth(database_url, "outbox_relay_t") == 0
    finally:
        for relay in relays:
            await relay.drain(timeout_seconds=2)
        for bus in buses:
            await bus.close()
        for engine in engines:
            await engine.dispose()
