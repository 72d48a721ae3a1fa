"""Real-time sync as real processes: two scanners (one holds the watch), catalog, auth, scheduler, fakeplex,
PostgreSQL and NATS JetStream.

One module-scoped stack; the tests run in order. After a first sync, items added, edited and deleted in
fakeplex reach the catalog within 3 s with no scan, and the watcher's status (from either replica) says so.
(Episode roll-up is covered by tests/unit/scanner/test_realtime_applier.py.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from plexsync.fakeplex import FakePlexControl
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

from tests.integration.scanner.support import fakeplex_process
from tests.integration.scheduler.test_scheduler import Replicas
from tests.support.stack import ServiceStack, reset_jetstream

pytestmark = pytest.mark.timeout(300)
T = TypeVar("T")

SPEC: dict[str, Any] = {
    "seed": 11,
    "sections": [
        {"kind": "movie", "title": "Movies", "count": 30},
        {"kind": "show", "title": "Shows", "count": 3},
        {"kind": "movie", "title": "Quiet", "count": 5},
    ],
}
REALTIME_ENV = {
    "PLEXSYNC_REALTIME_ENABLED": "true",
    "PLEXSYNC_REALTIME_LEASE_SECONDS": "2",
    "PLEXSYNC_REALTIME_HEARTBEAT_SECONDS": "1",
    "PLEXSYNC_REALTIME_BACKOFF_MAX_SECONDS": "1",
    "PLEXSYNC_REALTIME_SERVERS_POLL_SECONDS": "1",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_SCAN_JOB_ACK_WAIT_SECONDS": "3",
}
SCHEDULER_ENV = {
    "PLEXSYNC_SCHEDULER_TICK_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_LEADER_POLL_SECONDS": "0.5",
    # Nothing scheduled during the tests: what reaches the catalog comes from the watcher or its fallbacks.
    "PLEXSYNC_SCHEDULER_REFRESH_INTERVAL_SECONDS": "86400",
    "PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS": "86400",
}
MOVIE, SHOW = common_pb2.LIBRARY_KIND_MOVIES, common_pb2.LIBRARY_KIND_SHOWS
REALTIME = common_pb2.JOB_TRIGGER_REALTIME


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), "--library-spec", json.dumps(SPEC)) as info:
        yield info


@pytest.fixture(scope="module")
def cluster(service_stack: ServiceStack, fake: dict[str, Any], nats_url: str) -> Iterator[Replicas]:
    asyncio.run(reset_jetstream(nats_url))
    service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    for name in ("catalog", "auth", "scanner", "scheduler"):
        service_stack.reserve(name)
    service_stack.start("catalog")
    service_stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
    service_stack.start("scheduler", **SCHEDULER_ENV)
    scanners = Replicas(service_stack, "scanner", REALTIME_ENV)
    scanners.start(int(service_stack.addresses["scanner"].rsplit(":", 1)[1]))
    scanners.start()
    try:
        yield scanners
    finally:
        scanners.stop_all()


@pytest.fixture(scope="module")
async def stubs(service_stack: ServiceStack, cluster: Replicas) -> AsyncIterator[dict[str, Any]]:
    channels = {name: service_stack.channel(name, "cli") for name in ("catalog", "auth", "scanner", "scheduler")}
    yield {
        "catalog": catalog_pb2_grpc.CatalogServiceStub(channels["catalog"]),
        "auth": auth_pb2_grpc.AuthServiceStub(channels["auth"]),
        "scanner": scanner_pb2_grpc.ScannerServiceStub(channels["scanner"]),
        "scheduler": scheduler_pb2_grpc.SchedulerServiceStub(channels["scheduler"]),
    }
    for channel in channels.values():
        await channel.close()


@pytest.fixture(scope="module")
async def control(fake: dict[str, Any]) -> AsyncIterator[FakePlexControl]:
    async with FakePlexControl(fake["url"]) as c:
        yield c


@pytest.fixture(scope="module")
async def synced(stubs: dict[str, Any], fake: dict[str, Any]) -> dict[str, Any]:
    """The server added and every library synced once; returns {"server": id, "libraries": {name: Library}}."""
    resp = await stubs["auth"].AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="RT"))
    server_id = resp.server.id
    trigger = await stubs["scheduler"].TriggerSync(scheduler_pb2.TriggerSyncRequest(server_id=server_id))
    for job in trigger.jobs:
        await finished(stubs, job.id)
    libs = await stubs["catalog"].ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server_id))
    return {"server": server_id, "libraries": {lib.name: lib for lib in libs.libraries}}


async def finished(stubs: dict[str, Any], job_id: str, within: float = 60) -> common_pb2.Job:
    async def probe() -> common_pb2.Job | None:
        job = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=job_id))).job
        done = job.status in (common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED)
        return job if done else None

    job = await eventually(probe, within, f"job {job_id} finished")
    assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, job
    return job


async def jobs_of(stubs: dict[str, Any], library_id: str) -> list[common_pb2.Job]:
    resp = await stubs["scheduler"].ListJobs(scheduler_pb2.ListJobsRequest(library_id=library_id, page_size=1000))
    return list(resp.jobs)


async def watcher(stubs: dict[str, Any], server_id: str) -> scanner_pb2.Watcher:
    resp = await stubs["scanner"].ListWatchers(scanner_pb2.ListWatchersRequest(server_id=server_id))
    assert len(resp.watchers) == 1, resp
    found: scanner_pb2.Watcher = resp.watchers[0]
    return found


async def item_by_key(stubs: dict[str, Any], library_id: str, rating_key: str) -> common_pb2.Item | None:
    token = ""
    while True:
        resp = await stubs["catalog"].ListItems(
            catalog_pb2.ListItemsRequest(library_id=library_id, page_size=1000, page_token=token)
        )
        for item in resp.items:
            if item.rating_key == rating_key:
                found: common_pb2.Item = item
                return found
        token = resp.next_page_token
        if not token:
            return None


async def connected(stubs: dict[str, Any], server_id: str) -> scanner_pb2.Watcher | None:
    resp = await stubs["scanner"].ListWatchers(scanner_pb2.ListWatchersRequest(server_id=server_id))
    live = [w for w in resp.watchers if w.state == scanner_pb2.WATCHER_STATE_CONNECTED]
    assert len(live) <= 1, resp
    return live[0] if live else None


async def test_one_replica_holds_the_watch(stubs: dict[str, Any], synced: dict[str, Any], cluster: Replicas) -> None:
    w = await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    pids = {str(c.pid) for c in cluster.children.values()}
    assert any(f":{pid}:" in w.holder for pid in pids), (w.holder, pids)
    # Through either replica's API: the status lives with the lease.
    wanted = {lib.id for lib in synced["libraries"].values()}

    async def all_libraries() -> scanner_pb2.Watcher | None:
        w = await watcher(stubs, synced["server"])
        return w if set(w.library_ids) == wanted else None

    await eventually(all_libraries, 15, "the watcher covers every library")


async def test_add_edit_delete_reach_the_catalog_within_3s_without_a_scan(
    stubs: dict[str, Any], synced: dict[str, Any], control: FakePlexControl
) -> None:
    movies = synced["libraries"]["Movies"]
    await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    jobs_before = len(await jobs_of(stubs, movies.id))

    started = time.monotonic()
    rk = await control.add_item(int(movies.plex_key), title="Arrived Just Now")
    item = await eventually(lambda: item_by_key(stubs, movies.id, rk), 3, "the new movie in the catalog")
    assert item.title == "Arrived Just Now" and time.monotonic() - started < 3

    started = time.monotonic()
    await control.change(rk, title="Renamed Just Now")

    async def renamed() -> common_pb2.Item | None:
        it = await item_by_key(stubs, movies.id, rk)
        return it if it is not None and it.title == "Renamed Just Now" else None

    await eventually(renamed, 3, "the edit in the catalog")

    await control.delete(rk)

    async def missing() -> common_pb2.Item | None:
        it = await item_by_key(stubs, movies.id, rk)
        return it if it is not None and it.state == common_pb2.ITEM_STATE_FILE_NOT_FOUND else None

    await eventually(missing, 3, "the deleted movie marked FILE_NOT_FOUND")
    assert len(await jobs_of(stubs, movies.id)) == jobs_before, "a scan ran: the changes did not come in real time"

    async def counted() -> scanner_pb2.Watcher | None:  # the status is persisted with each lease renewal
        w = await watcher(stubs, synced["server"])
        return w if w.changes_applied >= 3 and w.HasField("last_message_time") else None

    await eventually(counted, 5, "the watcher's status counts the three changes")
