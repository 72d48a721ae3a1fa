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

import aiohttp
import pytest
from google.protobuf import field_mask_pb2
from plexsync.common.clients import service_channel
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

from tests.integration.catalog.changefeed import collect, summary
from tests.integration.scanner.support import catalog_items, comparable, expected_item, fakeplex_items, fakeplex_process
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
Watch = catalog_pb2.WatchChangesRequest


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


async def update_realtime(stubs: dict[str, Any], library_id: str, on: bool) -> None:
    request = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=library_id, realtime_enabled=on),
        update_mask=field_mask_pb2.FieldMask(paths=["realtime_enabled"]),
    )
    await stubs["catalog"].UpdateLibrary(request)


async def titled(stubs: dict[str, Any], library_id: str, rating_key: str, title: str) -> common_pb2.Item | None:
    it = await item_by_key(stubs, library_id, rating_key)
    return it if it is not None and it.title == title else None


async def a_fallback_scan_ran(stubs: dict[str, Any], library_id: str, since: float) -> common_pb2.Job:
    """The REALTIME-triggered incremental scan the watcher asked for after `since` (Unix time), once it succeeded."""

    async def queued() -> common_pb2.Job | None:
        new = [
            j for j in await jobs_of(stubs, library_id)
            if j.trigger == REALTIME and j.create_time.ToNanoseconds() / 1e9 >= since
        ]  # fmt: skip
        return new[0] if new else None

    job = await eventually(queued, 20, "the watcher asked the scheduler for an incremental scan")
    assert job.mode == common_pb2.SCAN_MODE_INCREMENTAL
    return await finished(stubs, job.id)


async def test_watch_changes_resumed_from_a_token_delivers_exactly_the_changes_after_it(
    stubs: dict[str, Any], synced: dict[str, Any], control: FakePlexControl
) -> None:
    movies = synced["libraries"]["Movies"]
    await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    keys = [i.rating_key for i in (await stubs["catalog"].ListItems(
        catalog_pb2.ListItemsRequest(library_id=movies.id, page_size=3))).items]  # fmt: skip
    follow = asyncio.create_task(collect(stubs["catalog"], Watch(library_id=movies.id), 3, within=15))
    await asyncio.sleep(0.5)
    for n, rk in enumerate(keys):
        await control.change(rk, title=f"Followed {n}")
        await eventually(lambda rk=rk, n=n: titled(stubs, movies.id, rk, f"Followed {n}"), 3, "the edit")  # type: ignore[misc]
    live = await follow
    assert summary(live) == [("UPDATED", rk) for rk in keys]
    assert {c.source for c in live} == {common_pb2.CHANGE_SOURCE_REALTIME}
    # A client that saw only the first and reconnects with its token gets the other two, once each.
    resumed = await collect(stubs["catalog"], Watch(library_id=movies.id, resume_token=live[0].resume_token), 2)
    assert [c.resume_token for c in resumed] == [c.resume_token for c in live[1:]]


async def test_a_library_with_realtime_off_is_left_to_the_scans(
    stubs: dict[str, Any], synced: dict[str, Any], control: FakePlexControl
) -> None:
    quiet = synced["libraries"]["Quiet"]
    await update_realtime(stubs, quiet.id, False)

    async def dropped() -> scanner_pb2.Watcher | None:
        w = await watcher(stubs, synced["server"])
        return w if quiet.id not in w.library_ids and w.library_ids else None

    await eventually(dropped, 20, "the watcher no longer follows the library")
    jobs_before = len(await jobs_of(stubs, quiet.id))
    rk = await control.add_item(int(quiet.plex_key), title="Not In Real Time")
    await asyncio.sleep(3)
    assert await item_by_key(stubs, quiet.id, rk) is None
    assert len(await jobs_of(stubs, quiet.id)) == jobs_before  # and no fallback scan for it either
    await update_realtime(stubs, quiet.id, True)

    async def back() -> scanner_pb2.Watcher | None:
        w = await watcher(stubs, synced["server"])
        return w if quiet.id in w.library_ids else None

    await eventually(back, 20, "the watcher follows the library again")
    # The periodic schedule (the safety net) would bring the movie in; a scan now stands for it.
    trigger = await stubs["scheduler"].TriggerSync(scheduler_pb2.TriggerSyncRequest(library_id=quiet.id))
    for job in trigger.jobs:
        await finished(stubs, job.id)
    assert await item_by_key(stubs, quiet.id, rk) is not None


async def test_a_bulk_add_of_1000_movies_comes_in_a_few_batches_and_equals_fakeplex(
    stubs: dict[str, Any],
    synced: dict[str, Any],
    control: FakePlexControl,
    fake: dict[str, Any],
    service_stack: ServiceStack,
) -> None:
    movies = synced["libraries"]["Movies"]
    await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    jobs_before = len(await jobs_of(stubs, movies.id))
    follow = asyncio.create_task(collect(stubs["catalog"], Watch(library_id=movies.id), 1000, within=60))
    await asyncio.sleep(0.5)
    await control.reset_stats()
    added = await control.add_items_bulk(int(movies.plex_key), 1000)
    changes = await follow
    assert sorted(summary(changes)) == sorted(("ADDED", rk) for rk in added) and len(added) == 1000
    batches = {(c.commit_time.seconds, c.commit_time.nanos) for c in changes}
    assert len(batches) <= 10, f"{len(batches)} catalog writes for one import"
    stats = await control.stats()
    fetches = stats.get("GET /library/metadata/{ids}", 0)
    assert fetches <= 1000 // 50 + 5, stats  # metadata fetched in batches of 50 rating keys
    assert len(await jobs_of(stubs, movies.id)) == jobs_before  # no scan needed

    expected = {
        d["ratingKey"]: expected_item(d, common_pb2.ITEM_KIND_MOVIE, lambda p: (p, common_pb2.ITEM_STATE_UNAVAILABLE))
        for d in await asyncio.to_thread(fakeplex_items, fake["url"], fake["token"], movies.plex_key, 1)
    }
    channel = service_stack.channel("catalog", "cli")
    try:
        stored = await catalog_items(channel, movies.id)
    finally:
        await channel.close()
    present = {rk: comparable(i) for rk, i in stored.items() if i.state != common_pb2.ITEM_STATE_FILE_NOT_FOUND}
    assert present == expected
    gone = {rk for rk, i in stored.items() if i.state == common_pb2.ITEM_STATE_FILE_NOT_FOUND}
    assert gone and not gone & expected.keys()  # the movie deleted earlier, and nothing else


async def test_a_dropped_stream_is_recovered_and_changes_made_meanwhile_are_caught_by_a_scan(
    stubs: dict[str, Any], synced: dict[str, Any], control: FakePlexControl
) -> None:
    movies = synced["libraries"]["Movies"]
    before = await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    since = time.time()
    rk = (await stubs["catalog"].ListItems(catalog_pb2.ListItemsRequest(library_id=movies.id, page_size=1))).items[0]
    try:
        await control.notifications_refuse(503)  # the server restarts: the stream drops, and stays refused
        assert await control.notifications_drop() >= 1

        async def backing_off() -> scanner_pb2.Watcher | None:
            w = await watcher(stubs, synced["server"])
            return w if w.state == scanner_pb2.WATCHER_STATE_BACKING_OFF and "503" in w.last_error else None

        await eventually(backing_off, 10, "the watcher noticed the drop")
        await control.change(rk.rating_key, title="Changed While Down")  # announced to nobody
        await asyncio.sleep(1.5)
        assert (await item_by_key(stubs, movies.id, rk.rating_key)).title != "Changed While Down"  # type: ignore[union-attr]
    finally:
        await control.notifications_refuse(None)
    after = await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher reconnected")
    assert after.reconnects > before.reconnects
    await a_fallback_scan_ran(stubs, movies.id, since)
    assert await titled(stubs, movies.id, rk.rating_key, "Changed While Down")


async def test_a_silent_stream_is_detected_and_changes_made_meanwhile_are_caught(
    stubs: dict[str, Any], synced: dict[str, Any], control: FakePlexControl
) -> None:
    movies = synced["libraries"]["Movies"]
    before = await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    rk = (await stubs["catalog"].ListItems(catalog_pb2.ListItemsRequest(library_id=movies.id, page_size=2))).items[1]
    since = time.time()
    try:
        await control.notifications_silence(True)  # a hung server: no messages, no pongs
        await control.change(rk.rating_key, title="Changed While Silent")  # the announcement is lost

        async def noticed() -> scanner_pb2.Watcher | None:
            w = await watcher(stubs, synced["server"])
            return w if w.reconnects > before.reconnects or w.state != scanner_pb2.WATCHER_STATE_CONNECTED else None

        await eventually(noticed, 10, "the watcher noticed the silence (heartbeat 1 s)")
    finally:
        await control.notifications_silence(False)

    async def recovered() -> scanner_pb2.Watcher | None:
        w = await connected(stubs, synced["server"])
        return w if w is not None and w.reconnects > before.reconnects else None

    await eventually(recovered, 15, "the watcher reconnected")
    await a_fallback_scan_ran(stubs, movies.id, since)
    await eventually(lambda: titled(stubs, movies.id, rk.rating_key, "Changed While Silent"), 20, "the lost edit")


async def test_a_skipped_announcement_is_caught_by_a_scan(
    stubs: dict[str, Any], synced: dict[str, Any], control: FakePlexControl, fake: dict[str, Any]
) -> None:
    movies = synced["libraries"]["Movies"]
    await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    # How many messages Plex sends for one new movie; the last is its scan activity's end.
    url, headers = fake["url"] + "/:/websockets/notifications", {"X-Plex-Token": fake["token"]}
    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
        probe = await control.add_item(int(movies.plex_key), title="Probe")
        count = 0
        async with asyncio.timeout(10):
            async for msg in ws:
                count += 1
                container = json.loads(msg.data)["NotificationContainer"]
                if container["type"] == "activity" and container["ActivityNotification"][0]["event"] == "ended":
                    break
    await eventually(lambda: item_by_key(stubs, movies.id, probe), 3, "the probe, in real time")
    since = time.time()
    await control.notifications_skip(count - 1)  # all but the end: the watcher sees an end whose start it missed
    rk = await control.add_item(int(movies.plex_key), title="Announced To Nobody")
    await a_fallback_scan_ran(stubs, movies.id, since)
    assert await item_by_key(stubs, movies.id, rk) is not None
    assert (await control.notifications_status())["skipped"] == count - 1


async def test_killing_the_replica_that_holds_the_watch_moves_it_to_another(
    stubs: dict[str, Any],
    synced: dict[str, Any],
    control: FakePlexControl,
    cluster: Replicas,
    service_stack: ServiceStack,
) -> None:
    movies = synced["libraries"]["Movies"]
    held = await eventually(lambda: connected(stubs, synced["server"]), 15, "the watcher connected")
    victim = next(c.pid for c in cluster.children.values() if f":{c.pid}:" in held.holder)
    survivor_port = next(port for port, c in cluster.children.items() if c.pid != victim)
    channel = service_channel(f"127.0.0.1:{survivor_port}", service_stack.tokens["cli"])
    survivor = {**stubs, "scanner": scanner_pb2_grpc.ScannerServiceStub(channel)}
    victim_port = await asyncio.to_thread(cluster.kill, victim)
    killed = time.monotonic()

    async def moved() -> scanner_pb2.Watcher | None:
        w = await connected(survivor, synced["server"])
        return w if w is not None and w.holder != held.holder else None

    try:
        taken = await eventually(moved, 15, "the other replica took the watch")
        assert time.monotonic() - killed < 15 and f":{victim}:" not in taken.holder
        rk = await control.add_item(int(movies.plex_key), title="After The Takeover")
        await eventually(lambda: item_by_key(stubs, movies.id, rk), 5, "a change applied by the new holder")
    finally:
        await channel.close()
        await asyncio.to_thread(cluster.start, victim_port)  # restarted on its port, as Kubernetes would
