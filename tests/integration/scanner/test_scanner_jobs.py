"""Scan jobs from the scheduler's work queue, run by two real scanner processes sharing one durable consumer.

Jobs are published exactly as the scheduler publishes them (`EventBus.publish` to the PLEXSYNC_JOBS stream, the
job id as Nats-Msg-Id); what happened is read from the scan events (with `job_id`), GetScan, and the stream and
consumer state. Real catalog, auth, PostgreSQL, NATS and fakeplex processes; fakeplex's latency faults make scans
last long enough to kill, stop or cancel them mid-way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import PubAck
from nats.js.errors import NotFoundError
from plexsync.common.clients import service_channel
from plexsync.common.eventbus import JOB_CANCEL_SUBJECT, SCAN_JOB_CONSUMER, SCAN_JOB_SUBJECT, EventBus
from plexsync.devstack.infra import free_port
from plexsync.devstack.process import ChildProcess, start_service
from plexsync.fakeplex import FakePlexControl
from plexsync.scanner.events import REAPED_CODE
from plexsync.scanner.jobs import SHUTDOWN_REASON
from plexsync.scanner.repository import REAPED_REASON
from plexsync.v1 import auth_pb2, auth_pb2_grpc, common_pb2, events_pb2, scanner_pb2, scanner_pb2_grpc

from tests.integration.scanner.support import catalog_items, comparable, expected_item, fakeplex_items, fakeplex_process
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(120)

JOBS_STREAM = "PLEXSYNC_JOBS"
EVENTS_STREAM = "PLEXSYNC_EVENTS"
ACK_WAIT = 3.0
SECTIONS = 6
MOVIES = 12
DEEP = common_pb2.SCAN_MODE_DEEP
SCANNER_ENV = {
    "PLEXSYNC_SCAN_PAGE_SIZE": "5",
    "PLEXSYNC_SCAN_CONCURRENCY": "2",
    "PLEXSYNC_SCAN_BATCH_SIZE": "4",
    "PLEXSYNC_SCAN_METADATA_BATCH": "2",
    "PLEXSYNC_SCAN_LISTING_WORKER": "false",
    "PLEXSYNC_SCAN_PROGRESS_INTERVAL_SECONDS": "0.2",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_SCAN_MAX_JOBS": "2",
    "PLEXSYNC_SCAN_JOB_ACK_WAIT_SECONDS": str(ACK_WAIT),
    "PLEXSYNC_SCAN_JOB_MAX_DELIVER": "5",
}
TERMINAL = ("completed", "failed", "cancelled")


# ----------------------------------------------------------------------------- the stack
@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    spec = {
        "seed": 14,
        "sections": [{"kind": "movie", "title": f"Movies {i}", "count": MOVIES} for i in range(SECTIONS)],
    }
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), "--library-spec", json.dumps(spec)) as info:
        yield info


async def _clean_queue(nats_url: str) -> None:
    """Earlier modules share this NATS: start from an empty job queue and a consumer made by these scanners."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            await js.purge_stream(JOBS_STREAM)
            await js.delete_consumer(JOBS_STREAM, SCAN_JOB_CONSUMER)
        except NotFoundError:
            pass
    finally:
        await nc.close()


class Scanners:
    """The scanner processes of this module, by pid (a scan's replica is "host:pid:boot")."""

    def __init__(self, stack: ServiceStack) -> None:
        self.stack = stack
        self.children: dict[int, ChildProcess] = {}
        self._channels: dict[int, grpc.aio.Channel] = {}

    def start(self) -> ChildProcess:
        port = free_port()
        log_dir = self.stack.log_dir / f"scanner-{port}"
        child = start_service("scanner", port, {**self.stack.env("scanner"), **SCANNER_ENV}, log_dir)
        self.stack.children.append(child)
        self.children[child.pid] = child
        return child

    def of(self, replica: str) -> ChildProcess:
        return self.children[int(replica.split(":")[1])]

    def forget(self, child: ChildProcess) -> None:
        self.children.pop(child.pid, None)
        self._channels.pop(child.pid, None)
        if child in self.stack.children:
            self.stack.children.remove(child)

    def stub(self) -> scanner_pb2_grpc.ScannerServiceStub:
        """ScannerService of a running replica (any: they share the scans' history)."""
        pid, child = next(iter(self.children.items()))
        if pid not in self._channels:
            self._channels[pid] = service_channel(child.address, self.stack.tokens["test"])
        return scanner_pb2_grpc.ScannerServiceStub(self._channels[pid])


@pytest.fixture(scope="module")
def scanners(service_stack: ServiceStack, fake: dict[str, Any], nats_url: str) -> Scanners:
    asyncio.run(_clean_queue(nats_url))
    service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "test1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    for name in ("catalog", "auth"):
        service_stack.reserve(name)
    service_stack.start("catalog")
    service_stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
    out = Scanners(service_stack)
    out.start()
    out.start()
    return out


@pytest.fixture(scope="module")
async def channels(service_stack: ServiceStack, scanners: Scanners) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    chans = {name: service_stack.channel(name) for name in ("catalog", "auth")}
    yield chans
    for c in chans.values():
        await c.close()


@pytest.fixture(scope="module")
async def ctl(fake: dict[str, Any]) -> AsyncIterator[FakePlexControl]:
    async with FakePlexControl(fake["url"]) as c:
        yield c


@pytest.fixture(scope="module")
async def libraries(
    channels: dict[str, grpc.aio.Channel], scanners: Scanners, fake: dict[str, Any]
) -> dict[str, common_pb2.Library]:
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    added = await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Jobs Plex"))
    resp = await scanners.stub().SyncServer(scanner_pb2.SyncServerRequest(server_id=added.server.id))
    assert len(resp.libraries) == SECTIONS
    return {lib.plex_key: lib for lib in resp.libraries}


class Events:
    """Every scan event published on NATS while the module runs."""

    def __init__(self) -> None:
        self.all: list[events_pb2.ScanEvent] = []
        self._changed = asyncio.Event()

    async def collect(self, msg: Any) -> None:
        event = events_pb2.ScanEvent.FromString(msg.data)
        if event.WhichOneof("payload") != "progress":
            self.all.append(event)
            self._changed.set()

    def of(self, job_id: str, kind: str | None = None) -> list[events_pb2.ScanEvent]:
        return [e for e in self.all if e.job_id == job_id and (kind is None or e.WhichOneof("payload") == kind)]

    async def wait(
        self, job_id: str, until: Callable[[list[events_pb2.ScanEvent]], bool], within: float = 30
    ) -> list[events_pb2.ScanEvent]:
        async def poll() -> list[events_pb2.ScanEvent]:
            while not until(self.of(job_id)):
                self._changed.clear()
                await self._changed.wait()
            return self.of(job_id)

        try:
            return await asyncio.wait_for(poll(), within)
        except TimeoutError:
            raise AssertionError(f"job {job_id}: {[e.WhichOneof('payload') for e in self.of(job_id)]}") from None

    async def ended(self, job_id: str, within: float = 30) -> list[events_pb2.ScanEvent]:
        """The job's events once one of its scans ended for good (not handed back to the queue)."""
        return await self.wait(job_id, lambda es: any(_final(e) for e in es), within)


def _final(e: events_pb2.ScanEvent) -> bool:
    """Terminal, and not handed back to the queue: neither a requeued cancel nor a reaper's `failed` (the scan's
    scanner died; JetStream redelivers the job)."""
    kind = e.WhichOneof("payload")
    handed_back = (kind == "cancelled" and e.cancelled.requeued) or (kind == "failed" and e.failed.code == REAPED_CODE)
    return kind in TERMINAL and not handed_back


@pytest.fixture(scope="module")
async def bus(nats_url: str, scanners: Scanners) -> AsyncIterator[EventBus]:
    b = EventBus(nats_url, events_stream=EVENTS_STREAM, jobs_stream=JOBS_STREAM)
    await b.connect()
    yield b
    await b.close()


@pytest.fixture(scope="module")
async def events(bus: EventBus) -> AsyncIterator[Events]:
    out = Events()
    sub = await bus.nc.subscribe("plexsync.v1.scan.>", cb=out.collect)
    yield out
    await sub.unsubscribe()


async def publish_job(
    bus: EventBus, library_id: str, job_id: str = "", *, msg_id: str = "", mode: common_pb2.ScanMode.ValueType = DEEP
) -> PubAck:
    """A job, exactly as the scheduler hands it over."""
    job = events_pb2.ScanJobMessage(
        job_id=job_id or str(uuid.uuid4()),
        library_id=library_id,
        mode=mode,
    )
    job.enqueue_time.GetCurrentTime()
    return await bus.publish(SCAN_JOB_SUBJECT, job, msg_id=msg_id or job.job_id)


async def cancel_job(nc: NatsClient, job_id: str, reason: str) -> None:
    await nc.publish(JOB_CANCEL_SUBJECT, events_pb2.CancelJobCommand(job_id=job_id, reason=reason).SerializeToString())
    await nc.flush()


async def queue_drained(bus: EventBus, within: float = 10) -> None:
    """Every job acknowledged: nothing pending or unacknowledged on the consumer, nothing left in the stream."""

    async def poll() -> None:
        while True:
            info = await bus.js.consumer_info(JOBS_STREAM, SCAN_JOB_CONSUMER)
            stream = await bus.js.stream_info(JOBS_STREAM)
            if info.num_ack_pending == 0 and info.num_pending == 0 and stream.state.messages == 0:
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), within)


async def get_scan(scanners: Scanners, scan_id: str) -> common_pb2.Scan:
    resp: scanner_pb2.GetScanResponse = await scanners.stub().GetScan(scanner_pb2.GetScanRequest(scan_id=scan_id))
    return resp.scan


async def scans_of_job(scanners: Scanners, library_id: str, job_id: str) -> list[common_pb2.Scan]:
    resp = await scanners.stub().ListScans(scanner_pb2.ListScansRequest(library_id=library_id, page_size=1000))
    return [s for s in resp.scans if s.job_id == job_id]


# Held this long (under the scanner's 30 s Plex timeout), a metadata answer keeps a scan surely running while a test
# kills, stops or cancels it, however loaded the machine.
HOLD_MS = 20_000


async def slow_plex(ctl: FakePlexControl, ms: float = 500) -> None:
    """Full-metadata answers take `ms`: a deep scan of a section lasts a few seconds."""
    await ctl.add_fault("latency", latency_ms=ms, path_prefix="/library/metadata")


async def hold_scan(ctl: FakePlexControl) -> None:
    """The first PLEXSYNC_SCAN_CONCURRENCY metadata requests (all a scan has in flight) are held `HOLD_MS`; later
    ones, such as the next attempt's, are answered at once."""
    concurrency = int(SCANNER_ENV["PLEXSYNC_SCAN_CONCURRENCY"])
    await ctl.add_fault("latency", latency_ms=HOLD_MS, path_prefix="/library/metadata", times=concurrency)


# ----------------------------------------------------------------------------- tests
async def test_a_job_runs_with_its_id_replica_attempt_and_stats_and_is_acked(
    bus: EventBus, events: Events, scanners: Scanners, libraries: dict[str, common_pb2.Library]
) -> None:
    job_id = str(uuid.uuid4())
    ack = await publish_job(bus, libraries["1"].id, job_id)
    assert not ack.duplicate
    got = await events.ended(job_id)
    kinds = [e.WhichOneof("payload") for e in got]
    assert kinds == ["started", "completed"], kinds
    assert all(e.job_id == job_id for e in got)
    started, completed = got[0].started, got[-1].completed
    assert started.job_id == job_id and started.attempt == 1 and started.replica.count(":") == 2
    assert completed.counts.added == MOVIES and completed.stats.plex_requests > 0
    scan = await get_scan(scanners, got[0].scan_id)
    assert scan.status == common_pb2.SCAN_STATUS_COMPLETED and scan.job_id == job_id
    assert scan.replica == started.replica and scan.attempt == 1
    assert scan.stats.plex_requests > 0 and scan.stats.plex_bytes > 0
    assert scan.stats.listing_time.ToNanoseconds() > 0 and scan.stats.metadata_time.ToNanoseconds() > 0
    assert scan.stats.catalog_write_time.ToNanoseconds() > 0
    assert scan.stats == completed.stats
    await queue_drained(bus)


async def test_a_job_handed_over_twice_runs_once_and_a_late_duplicate_is_skipped(
    bus: EventBus, events: Events, scanners: Scanners, libraries: dict[str, common_pb2.Library]
) -> None:
    lib = libraries["2"]
    job_id = str(uuid.uuid4())
    first = await publish_job(bus, lib.id, job_id)
    second = await publish_job(bus, lib.id, job_id)  # the scheduler retried its publish: JetStream drops it
    assert second.duplicate and second.seq == first.seq
    await events.ended(job_id)
    await queue_drained(bus)
    # The same job delivered again after it finished (a new message, past the de-duplication window): skipped.
    await publish_job(bus, lib.id, job_id, msg_id=f"{job_id}-again")
    await queue_drained(bus)
    await asyncio.sleep(0.5)
    assert len(events.of(job_id, "started")) == 1
    scans = await scans_of_job(scanners, lib.id, job_id)
    assert [s.status for s in scans] == [common_pb2.SCAN_STATUS_COMPLETED]


async def test_two_scanners_share_the_jobs(
    bus: EventBus,
    events: Events,
    scanners: Scanners,
    libraries: dict[str, common_pb2.Library],
    ctl: FakePlexControl,
) -> None:
    await slow_plex(ctl, 150)
    try:
        job_ids = [str(uuid.uuid4()) for _ in libraries]
        for job_id, lib in zip(job_ids, libraries.values(), strict=True):
            await publish_job(bus, lib.id, job_id)
        replicas = set()
        for job_id in job_ids:
            got = await events.ended(job_id, within=60)
            assert got[-1].WhichOneof("payload") == "completed", got[-1]
            replicas.add(got[0].started.replica)
    finally:
        await ctl.clear_faults()
    assert {scanners.of(r).pid for r in replicas} == set(scanners.children), replicas
    await queue_drained(bus)


async def test_a_killed_scanners_job_is_redelivered_and_the_catalog_converges(
    bus: EventBus,
    events: Events,
    scanners: Scanners,
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    fake: dict[str, Any],
    ctl: FakePlexControl,
) -> None:
    lib = libraries["3"]
    job_id = str(uuid.uuid4())
    await hold_scan(ctl)
    try:
        await publish_job(bus, lib.id, job_id)
        first = (await events.wait(job_id, lambda es: bool(es)))[0]
        victim = scanners.of(first.started.replica)
        await asyncio.sleep(0.5)
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = asyncio.get_running_loop().time()
        if victim.popen is not None:
            await asyncio.to_thread(victim.popen.wait, 5)
        scanners.forget(victim)
        got = await events.ended(job_id, within=ACK_WAIT + 20)
    finally:
        await ctl.clear_faults()
    starts = [e.started for e in got if e.WhichOneof("payload") == "started"]
    assert [s.attempt for s in starts] == [1, 2] and starts[1].replica != starts[0].replica
    assert got[-1].WhichOneof("payload") == "completed"
    # The dead scanner's scan was announced by the scanner that reaped it, once, before the retry began.
    dead = [e for e in got if e.scan_id == first.scan_id]
    assert [e.WhichOneof("payload") for e in dead] == ["started", "failed"], dead
    assert dead[1].failed.code == REAPED_CODE and REAPED_REASON in dead[1].failed.error
    assert got.index(dead[1]) < got.index(next(e for e in got if e.started.attempt == 2))
    assert asyncio.get_running_loop().time() - killed_at < ACK_WAIT + 15
    scans = {s.attempt: s for s in await scans_of_job(scanners, lib.id, job_id)}
    assert scans[1].status == common_pb2.SCAN_STATUS_FAILED and scans[2].status == common_pb2.SCAN_STATUS_COMPLETED
    await queue_drained(bus)
    # the catalog holds exactly what Plex has for that library
    expected = {
        d["ratingKey"]: expected_item(
            d, common_pb2.ITEM_KIND_MOVIE, lambda path: (path, common_pb2.ITEM_STATE_UNAVAILABLE)
        )
        for d in fakeplex_items(fake["url"], fake["token"], lib.plex_key, 1)
    }
    got_items = {rk: comparable(i) for rk, i in (await catalog_items(channels["catalog"], lib.id)).items()}
    assert got_items == expected
    await asyncio.to_thread(scanners.start)


async def test_cancel_job_stops_its_scan_and_a_job_cancelled_before_it_arrives_never_scans(
    bus: EventBus,
    events: Events,
    scanners: Scanners,
    libraries: dict[str, common_pb2.Library],
    ctl: FakePlexControl,
) -> None:
    lib = libraries["4"]
    job_id = str(uuid.uuid4())
    await hold_scan(ctl)
    try:
        await publish_job(bus, lib.id, job_id)
        await events.wait(job_id, lambda es: bool(es))
        await asyncio.sleep(0.3)
        for _ in range(2):  # the scheduler repeats the command while the job runs
            await cancel_job(bus.nc, job_id, "the user cancelled the sync")
        got = await events.ended(job_id, within=10)
    finally:
        await ctl.clear_faults()
    cancelled = got[-1].cancelled
    assert got[-1].WhichOneof("payload") == "cancelled" and not cancelled.requeued
    assert cancelled.reason == "the user cancelled the sync"
    scan = await get_scan(scanners, got[-1].scan_id)
    assert scan.status == common_pb2.SCAN_STATUS_CANCELLED
    await queue_drained(bus)
    # not redelivered after the ack wait
    await asyncio.sleep(ACK_WAIT + 0.5)
    assert len(events.of(job_id, "started")) == 1

    early = str(uuid.uuid4())
    await cancel_job(bus.nc, early, "cancelled while queued")
    await asyncio.sleep(0.2)
    await publish_job(bus, lib.id, early)
    got = await events.ended(early)
    assert [e.WhichOneof("payload") for e in got] == ["started", "cancelled"]
    assert got[-1].cancelled.reason == "cancelled while queued"
    scan = await get_scan(scanners, got[-1].scan_id)
    assert scan.status == common_pb2.SCAN_STATUS_CANCELLED and scan.counts.seen == 0 and scan.job_id == early
    await queue_drained(bus)


async def test_a_job_for_an_unknown_library_fails_with_a_clear_event(
    bus: EventBus, events: Events, scanners: Scanners
) -> None:
    job_id, library_id = str(uuid.uuid4()), str(uuid.uuid4())
    await publish_job(bus, library_id, job_id)
    got = await events.ended(job_id)
    assert [e.WhichOneof("payload") for e in got] == ["failed"]
    failed = got[0].failed
    assert failed.code == "NOT_FOUND" and library_id in failed.error, failed
    scan = await get_scan(scanners, got[0].scan_id)
    assert scan.status == common_pb2.SCAN_STATUS_FAILED and scan.job_id == job_id and scan.attempt == 1
    await queue_drained(bus)


async def test_a_stopped_scanner_hands_its_job_back_and_the_other_runs_it(
    bus: EventBus,
    events: Events,
    scanners: Scanners,
    libraries: dict[str, common_pb2.Library],
    ctl: FakePlexControl,
) -> None:
    lib = libraries["5"]
    job_id = str(uuid.uuid4())
    await hold_scan(ctl)
    try:
        await publish_job(bus, lib.id, job_id)
        first = (await events.wait(job_id, lambda es: bool(es)))[0]
        victim = scanners.of(first.started.replica)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(victim.stop, 20)  # SIGTERM, waits for the process to exit
        scanners.forget(victim)
        got = await events.ended(job_id, within=30)
    finally:
        await ctl.clear_faults()
    kinds = [e.WhichOneof("payload") for e in got]
    assert kinds == ["started", "cancelled", "started", "completed"], kinds
    handed_back = got[1].cancelled
    assert handed_back.requeued and handed_back.reason == SHUTDOWN_REASON
    assert got[2].started.attempt == 2 and got[2].started.replica != got[0].started.replica
    await queue_drained(bus)


async def test_a_job_for_a_busy_library_waits_for_its_scan_and_then_runs(
    bus: EventBus,
    events: Events,
    scanners: Scanners,
    libraries: dict[str, common_pb2.Library],
    ctl: FakePlexControl,
) -> None:
    lib = libraries["6"]
    job_id = str(uuid.uuid4())
    await slow_plex(ctl, 300)
    try:
        direct = await scanners.stub().ScanLibrary(scanner_pb2.ScanLibraryRequest(library_id=lib.id, mode=DEEP))
        await publish_job(bus, lib.id, job_id)
        got = await events.ended(job_id, within=30)
    finally:
        await ctl.clear_faults()
    assert [e.WhichOneof("payload") for e in got] == ["started", "completed"]
    assert got[0].started.attempt == 1
    first = await get_scan(scanners, direct.scan.id)
    assert first.status == common_pb2.SCAN_STATUS_COMPLETED and not first.job_id and first.attempt == 0
    assert got[0].time.ToNanoseconds() >= first.end_time.ToNanoseconds()
    await queue_drained(bus)
