"""The scheduler as real processes: two schedulers, two scanners, catalog, auth, two fakeplex servers,
PostgreSQL and NATS JetStream.

One module-scoped stack; the tests run in order. Schedule alone enumerates both servers and scans all 20
libraries with both scanners doing work, within the total and per-server limits (asserted from job history),
with no job doubled over many ticks; a double trigger makes one job and force one follow-up; a scanner killed
mid-job has its job finished by the other; killing the leading scheduler hands the lead over within 5 s; a
library added in Plex is scanned by schedule alone; a window keeps scheduled scans out; cancel and bad input.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from plexsync.devstack.infra import free_port
from plexsync.devstack.process import ChildProcess, start_service
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
from tests.support.stack import ServiceStack, reset_jetstream

pytestmark = pytest.mark.timeout(240)
T = TypeVar("T")

SUCCEEDED, FAILED, CANCELLED = (
    common_pb2.JOB_STATUS_SUCCEEDED,
    common_pb2.JOB_STATUS_FAILED,
    common_pb2.JOB_STATUS_CANCELLED,
)
TERMINAL = {SUCCEEDED, FAILED, CANCELLED}
MAX_RUNNING, PER_SERVER = 3, 2
SCHEDULER_ENV = {
    "PLEXSYNC_SCHEDULER_TICK_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS": "2",
    "PLEXSYNC_SCHEDULER_RECONCILE_SECONDS": "1",
    "PLEXSYNC_SCHEDULER_LEADER_POLL_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_MAX_RUNNING": str(MAX_RUNNING),
    "PLEXSYNC_SCHEDULER_MAX_RUNNING_PER_SERVER": str(PER_SERVER),
    "PLEXSYNC_SCHEDULER_DEEP_INTERVAL_SECONDS": "0",
}
SCANNER_ENV = {
    "PLEXSYNC_SCAN_PAGE_SIZE": "5",
    "PLEXSYNC_SCAN_CONCURRENCY": "2",
    "PLEXSYNC_SCAN_BATCH_SIZE": "10",
    "PLEXSYNC_SCAN_MAX_JOBS": "2",
    "PLEXSYNC_SCAN_JOB_ACK_WAIT_SECONDS": "3",
    "PLEXSYNC_SCAN_STALE_SECONDS": "5",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_SCAN_PROGRESS_INTERVAL_SECONDS": "0.2",
}
# Server A: 12 movie sections (the first slow and bigger, for the kill test); server B: 8.
# A listing page held this long (under the scanner's 30 s Plex timeout) keeps a scan surely running while a test kills
# or cancels it, however loaded the machine; the tests clear the fault (or the cancel aborts the request) right after.
HOLD_MS = 20_000
SPEC_A: dict[str, Any] = {"seed": 3, "sections": [{"kind": "movie", "title": "Slow", "count": 60}]
          + [{"kind": "movie", "title": f"A{i}", "count": 4} for i in range(1, 12)]}  # fmt: skip
SPEC_B: dict[str, Any] = {"seed": 4, "sections": [{"kind": "movie", "title": f"B{i}", "count": 4} for i in range(8)]}


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.2)


class Replicas:
    """Several processes of one service, each on its own port (restartable on the same one)."""

    def __init__(self, stack: ServiceStack, name: str, env: dict[str, str]) -> None:
        self.stack, self.name, self.env = stack, name, env
        self.children: dict[int, ChildProcess] = {}

    def start(self, port: int | None = None) -> ChildProcess:
        port = port or free_port()
        log_dir = self.stack.log_dir / f"{self.name}-{port}"
        child = start_service(self.name, port, {**self.stack.env(self.name), **self.env}, log_dir)
        self.children[port] = child
        return child

    def by_pid(self, pid: int) -> tuple[int, ChildProcess]:
        return next((port, c) for port, c in self.children.items() if c.pid == pid)

    def kill(self, pid: int) -> int:
        port, child = self.by_pid(pid)
        os.kill(child.pid, signal.SIGKILL)
        if child.popen is not None:
            child.popen.wait(timeout=10)
        del self.children[port]
        return port

    def stop_all(self) -> None:
        for child in self.children.values():
            child.stop(timeout=10)
        self.children.clear()


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    log_dir = tmp_path_factory.mktemp("fakeplex")
    with (
        fakeplex_process(log_dir / "a", "--library-spec", json.dumps(SPEC_A), "--latency-ms", "10") as a,
        fakeplex_process(log_dir / "b", "--library-spec", json.dumps(SPEC_B), "--latency-ms", "10") as b,
    ):
        yield [a, b]


@pytest.fixture(scope="module")
def cluster(service_stack: ServiceStack, fakes: list[dict[str, Any]], nats_url: str) -> Iterator[dict[str, Replicas]]:
    asyncio.run(reset_jetstream(nats_url))
    service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    for name in ("catalog", "auth", "scanner", "scheduler"):
        service_stack.reserve(name)
    service_stack.start("catalog")
    service_stack.start("auth", PLEXSYNC_PLEX_TV_URL=fakes[0]["url"], PLEXSYNC_GDM_ENABLED="false")
    scanners = Replicas(service_stack, "scanner", SCANNER_ENV)
    schedulers = Replicas(service_stack, "scheduler", SCHEDULER_ENV)
    # The first of each listens on the address its peers are configured with.
    scanners.start(int(service_stack.addresses["scanner"].rsplit(":", 1)[1]))
    scanners.start()
    schedulers.start(int(service_stack.addresses["scheduler"].rsplit(":", 1)[1]))
    schedulers.start()
    try:
        yield {"scanner": scanners, "scheduler": schedulers}
    finally:
        schedulers.stop_all()
        scanners.stop_all()


@pytest.fixture(scope="module")
async def stubs(service_stack: ServiceStack, cluster: dict[str, Replicas]) -> AsyncIterator[dict[str, Any]]:
    channels = {name: service_stack.channel(name, "cli") for name in ("catalog", "auth", "scanner", "scheduler")}
    yield {
        "catalog": catalog_pb2_grpc.CatalogServiceStub(channels["catalog"]),
        "auth": auth_pb2_grpc.AuthServiceStub(channels["auth"]),
        "scanner": scanner_pb2_grpc.ScannerServiceStub(channels["scanner"]),
        "scheduler": scheduler_pb2_grpc.SchedulerServiceStub(channels["scheduler"]),
        "channels": channels,
    }
    for channel in channels.values():
        await channel.close()


def scheduler_at(stack: ServiceStack, port: int) -> tuple[grpc.aio.Channel, scheduler_pb2_grpc.SchedulerServiceStub]:
    from plexsync.common.clients import service_channel

    channel = service_channel(f"127.0.0.1:{port}", stack.tokens["cli"])
    return channel, scheduler_pb2_grpc.SchedulerServiceStub(channel)


async def all_jobs(stubs: dict[str, Any], **filters: Any) -> list[common_pb2.Job]:
    jobs: list[common_pb2.Job] = []
    token = ""
    while True:
        resp = await stubs["scheduler"].ListJobs(scheduler_pb2.ListJobsRequest(page_size=1000, page_token=token,
                                                                               **filters))  # fmt: skip
        jobs.extend(resp.jobs)
        token = resp.next_page_token
        if not token:
            return jobs


async def libraries(stubs: dict[str, Any]) -> list[common_pb2.Library]:
    resp = await stubs["catalog"].ListLibraries(catalog_pb2.ListLibrariesRequest(page_size=1000))
    return list(resp.libraries)


async def item_count(stubs: dict[str, Any], library_id: str) -> int:
    stats = await stubs["catalog"].GetLibraryStats(catalog_pb2.GetLibraryStatsRequest(library_id=library_id))
    return int(sum(c.count for c in stats.counts if c.state != common_pb2.ITEM_STATE_FILE_NOT_FOUND))


def max_overlap(jobs: list[common_pb2.Job], key: Callable[[common_pb2.Job], str]) -> dict[str, int]:
    """The most jobs that ran at the same moment, per key, from their start and end times."""
    points: dict[str, list[tuple[float, int]]] = {}
    for job in jobs:
        if not job.HasField("start_time"):
            continue
        end = job.end_time.ToNanoseconds() if job.HasField("end_time") else time.time_ns()
        points.setdefault(key(job), []).extend([(job.start_time.ToNanoseconds(), 1), (end, -1)])
    out = {}
    for k, pts in points.items():
        running = peak = 0
        for _, delta in sorted(pts, key=lambda p: (p[0], p[1])):
            running += delta
            peak = max(peak, running)
        out[k] = peak
    return out


@pytest.fixture(scope="module")
async def servers(stubs: dict[str, Any], fakes: list[dict[str, Any]]) -> list[str]:
    ids = []
    for fake, name in zip(fakes, ("Plex A", "Plex B"), strict=True):
        resp = await stubs["auth"].AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name=name))
        ids.append(resp.server.id)
    return ids


async def test_exactly_one_scheduler_leads(stubs: dict[str, Any], cluster: dict[str, Replicas],
                                           service_stack: ServiceStack) -> None:  # fmt: skip
    async def leaders() -> list[str] | None:
        answers = []
        for port in cluster["scheduler"].children:
            channel, stub = scheduler_at(service_stack, port)
            async with channel:
                status = await stub.GetSchedulerStatus(scheduler_pb2.GetSchedulerStatusRequest())
            answers.append((status.is_leader, status.leader))
        leading = [a for a in answers if a[0]]
        return [a[1] for a in answers] if len(leading) == 1 and len({a[1] for a in answers}) == 1 else None

    await eventually(leaders, 15, "exactly one leader that both replicas name")


async def test_schedule_alone_scans_every_library_of_both_servers_within_the_limits(
    stubs: dict[str, Any], servers: list[str], fakes: list[dict[str, Any]]
) -> None:
    async def registered() -> list[common_pb2.Library] | None:
        libs = await libraries(stubs)
        return libs if len(libs) == 20 else None

    libs = await eventually(registered, 30, "the leader enumerates both servers' 20 sections")

    async def all_done() -> list[common_pb2.Job] | None:
        jobs = await all_jobs(stubs)
        done = [j for j in jobs if j.status == SUCCEEDED]
        return jobs if len({j.library_id for j in done}) == 20 else None

    jobs = await eventually(all_done, 120, "a succeeded scheduled job for every library")
    await asyncio.sleep(3)  # several more ticks: nothing is due again, nothing is doubled
    jobs = await all_jobs(stubs)
    per_library: dict[str, int] = {}
    for job in jobs:
        per_library[job.library_id] = per_library.get(job.library_id, 0) + 1
        assert job.trigger == common_pb2.JOB_TRIGGER_SCHEDULED and job.triggered_by == "scheduler"
        assert job.status == SUCCEEDED, (job.library_name, job.error)
        assert job.reason == "never scanned"
        assert job.HasField("dispatch_time") and job.start_time.ToNanoseconds() >= job.create_time.ToNanoseconds()
    assert set(per_library.values()) == {1}, f"jobs per library: {per_library}"
    assert len({j.replica for j in jobs}) == 2, "both scanners ran jobs"
    per_server = max_overlap(jobs, lambda j: j.server_id)
    total = max_overlap(jobs, lambda j: "all")["all"]
    assert max(per_server.values()) <= PER_SERVER, per_server
    assert 2 <= total <= MAX_RUNNING, total
    expected = {s["title"]: s["count"] for spec in (SPEC_A, SPEC_B) for s in spec["sections"]}
    for lib in libs:
        assert await item_count(stubs, lib.id) == expected[lib.name], lib.name
    first = jobs[0]
    assert first.stats.plex_requests > 0 and first.counts.added == expected[first.library_name]


async def test_a_double_trigger_makes_one_job_and_force_exactly_one_follow_up(
    stubs: dict[str, Any], servers: list[str], fakes: list[dict[str, Any]]
) -> None:
    slow = next(lib for lib in await libraries(stubs) if lib.name == "Slow")
    async with FakePlexControl(fakes[0]["url"]) as ctl:
        await ctl.add_fault("latency", path_prefix=f"/library/sections/{slow.plex_key}/all", latency_ms=300)
        try:
            request = scheduler_pb2.TriggerSyncRequest(library_id=slow.id, mode=common_pb2.SCAN_MODE_DEEP)
            a, b = await asyncio.gather(
                stubs["scheduler"].TriggerSync(request), stubs["scheduler"].TriggerSync(request)
            )
            assert a.jobs[0].id == b.jobs[0].id, "one job for a double trigger"
            forced = scheduler_pb2.TriggerSyncRequest(library_id=slow.id, force=True)
            f1, f2 = await asyncio.gather(
                stubs["scheduler"].TriggerSync(forced), stubs["scheduler"].TriggerSync(forced)
            )
            assert f1.jobs[0].id == f2.jobs[0].id != a.jobs[0].id, "force queues exactly one follow-up"
            assert f1.jobs[0].status == common_pb2.JOB_STATUS_PENDING
            assert "follow-up" in f1.jobs[0].reason and f1.jobs[0].triggered_by == "cli"

            async def both_done() -> bool:
                got = [await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=j))
                       for j in (a.jobs[0].id, f1.jobs[0].id)]  # fmt: skip
                return all(g.job.status == SUCCEEDED for g in got)

            await eventually(both_done, 90, "the job and its follow-up succeed, one after the other")
            first = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=a.jobs[0].id))).job
            follow = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=f1.jobs[0].id))).job
            assert follow.start_time.ToNanoseconds() >= first.end_time.ToNanoseconds()
            assert first.mode == common_pb2.SCAN_MODE_DEEP and first.stats.metadata_time.ToNanoseconds() > 0
        finally:
            await ctl.clear_faults()


async def test_a_scanner_killed_mid_job_has_the_job_finished_by_the_other(
    stubs: dict[str, Any], cluster: dict[str, Replicas], fakes: list[dict[str, Any]]
) -> None:
    slow = next(lib for lib in await libraries(stubs) if lib.name == "Slow")
    async with FakePlexControl(fakes[0]["url"]) as ctl:
        await ctl.add_fault("latency", path_prefix=f"/library/sections/{slow.plex_key}/all", latency_ms=HOLD_MS)
        try:
            request = scheduler_pb2.TriggerSyncRequest(library_id=slow.id, mode=common_pb2.SCAN_MODE_DEEP)
            job_id = (await stubs["scheduler"].TriggerSync(request)).jobs[0].id

            async def running() -> common_pb2.Job | None:
                job = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=job_id))).job
                return job if job.status == common_pb2.JOB_STATUS_RUNNING and job.replica else None

            job = await eventually(running, 30, "the job runs")
            victim = int(job.replica.split(":")[1])
            port = cluster["scanner"].kill(victim)
            await ctl.clear_faults()

            async def finished() -> common_pb2.Job | None:
                got = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=job_id))).job
                return got if got.status in TERMINAL else None

            done = await eventually(finished, 60, "the other scanner finishes the killed scanner's job")
            assert done.status == SUCCEEDED, done.error
            assert done.attempt >= 2 and int(done.replica.split(":")[1]) != victim
            assert await item_count(stubs, slow.id) == 60
        finally:
            await ctl.clear_faults()
    cluster["scanner"].start(port)


async def test_killing_the_leading_scheduler_hands_the_lead_over_within_5_seconds(
    stubs: dict[str, Any], cluster: dict[str, Replicas], service_stack: ServiceStack
) -> None:
    ports = list(cluster["scheduler"].children)
    statuses = {}
    for port in ports:
        channel, stub = scheduler_at(service_stack, port)
        async with channel:
            statuses[port] = await stub.GetSchedulerStatus(scheduler_pb2.GetSchedulerStatusRequest())
    leader_port = next(p for p, s in statuses.items() if s.is_leader)
    survivor = next(p for p in ports if p != leader_port)
    jobs_before = len(await all_jobs(stubs))
    cluster["scheduler"].kill(cluster["scheduler"].children[leader_port].pid)
    killed_at = time.monotonic()
    channel, stub = scheduler_at(service_stack, survivor)
    async with channel:
        survivor_stubs = {"scheduler": stub}

        async def leads() -> bool:
            return bool((await stub.GetSchedulerStatus(scheduler_pb2.GetSchedulerStatusRequest())).is_leader)

        await eventually(leads, 5, "the surviving scheduler leads")
        handover = time.monotonic() - killed_at
        assert handover < 5, handover
        await asyncio.sleep(2)  # the new leader ticks: nothing is due, so nothing is queued
        assert len(await all_jobs(survivor_stubs)) == jobs_before
    cluster["scheduler"].start(leader_port)


async def test_a_stopped_leader_gives_the_lead_away_at_once_and_exits_cleanly(
    cluster: dict[str, Replicas], service_stack: ServiceStack
) -> None:
    replicas = cluster["scheduler"]
    statuses = {}
    for port in list(replicas.children):
        channel, stub = scheduler_at(service_stack, port)
        async with channel:
            statuses[port] = await stub.GetSchedulerStatus(scheduler_pb2.GetSchedulerStatusRequest())
    leader_port = next(p for p, st in statuses.items() if st.is_leader)
    survivor = next(p for p in statuses if p != leader_port)
    leader = replicas.children.pop(leader_port)
    assert leader.popen is not None
    os.kill(leader.pid, signal.SIGTERM)
    stopped_at = time.monotonic()
    channel, stub = scheduler_at(service_stack, survivor)
    async with channel:

        async def leads() -> bool:
            return bool((await stub.GetSchedulerStatus(scheduler_pb2.GetSchedulerStatusRequest())).is_leader)

        await eventually(leads, 3, "the other scheduler leads soon after SIGTERM")
    assert time.monotonic() - stopped_at < 3
    assert await asyncio.to_thread(leader.popen.wait, 15) == 0, "the stopped scheduler exits cleanly"
    replicas.start(leader_port)


async def test_a_library_added_in_plex_is_enumerated_and_scanned_by_schedule_alone(
    stubs: dict[str, Any], fakes: list[dict[str, Any]]
) -> None:
    async with FakePlexControl(fakes[1]["url"]) as ctl:
        await ctl.add_section(kind="movie", title="Added Later", count=7)

    async def scanned() -> common_pb2.Job | None:
        lib = next((lib for lib in await libraries(stubs) if lib.name == "Added Later"), None)
        if lib is None:
            return None
        jobs = await all_jobs(stubs, library_id=lib.id)
        return next((j for j in jobs if j.status == SUCCEEDED), None)

    job = await eventually(scanned, 40, "the new section is registered and scanned")
    assert job.trigger == common_pb2.JOB_TRIGGER_SCHEDULED and job.counts.added == 7
    assert await item_count(stubs, job.library_id) == 7


async def test_a_window_keeps_scheduled_scans_out_until_it_opens(stubs: dict[str, Any]) -> None:
    lib = next(lib for lib in await libraries(stubs) if lib.name == "B1")
    zone = "Asia/Tokyo"
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    closed = scheduler_pb2.TimeWindow(start=f"{(local + timedelta(hours=2)):%H:%M}",
                                      end=f"{(local + timedelta(hours=3)):%H:%M}", time_zone=zone)  # fmt: skip
    mask = field_mask_pb2.FieldMask(paths=["refresh_interval", "window"])
    schedule = scheduler_pb2.Schedule(library_id=lib.id, refresh_interval=duration_pb2.Duration(seconds=10),
                                      window=closed)  # fmt: skip
    got = (
        await stubs["scheduler"].UpdateSchedule(
            scheduler_pb2.UpdateScheduleRequest(schedule=schedule, update_mask=mask)
        )
    ).schedule
    assert got.refresh_interval.seconds == 10 and got.window.time_zone == zone
    assert "waits for the window" in got.next_reason and got.next_run_time.ToDatetime(UTC) > datetime.now(UTC)
    before = len(await all_jobs(stubs, library_id=lib.id))
    await asyncio.sleep(13)  # past the interval, many ticks: the window is closed
    assert len(await all_jobs(stubs, library_id=lib.id)) == before
    opened = scheduler_pb2.TimeWindow(start=f"{(local - timedelta(hours=1)):%H:%M}",
                                      end=f"{(local + timedelta(hours=1)):%H:%M}", time_zone=zone)  # fmt: skip
    schedule = scheduler_pb2.Schedule(library_id=lib.id, window=opened)
    await stubs["scheduler"].UpdateSchedule(scheduler_pb2.UpdateScheduleRequest(
        schedule=schedule, update_mask=field_mask_pb2.FieldMask(paths=["window"])))  # fmt: skip

    async def scheduled() -> bool:
        jobs = await all_jobs(stubs, library_id=lib.id)
        return len(jobs) > before and jobs[0].trigger == common_pb2.JOB_TRIGGER_SCHEDULED

    await eventually(scheduled, 10, "a scheduled scan once the window is open")
    reset = scheduler_pb2.Schedule(library_id=lib.id)
    await stubs["scheduler"].UpdateSchedule(scheduler_pb2.UpdateScheduleRequest(
        schedule=reset, update_mask=field_mask_pb2.FieldMask(paths=["refresh_interval", "window"])))  # fmt: skip


async def test_cancel_stops_a_running_job_on_whichever_scanner_runs_it(
    stubs: dict[str, Any], fakes: list[dict[str, Any]]
) -> None:
    slow = next(lib for lib in await libraries(stubs) if lib.name == "Slow")
    async with FakePlexControl(fakes[0]["url"]) as ctl:
        await ctl.add_fault("latency", path_prefix=f"/library/sections/{slow.plex_key}/all", latency_ms=HOLD_MS)
        try:
            request = scheduler_pb2.TriggerSyncRequest(library_id=slow.id, mode=common_pb2.SCAN_MODE_DEEP)
            job_id = (await stubs["scheduler"].TriggerSync(request)).jobs[0].id

            async def running() -> bool:
                job = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=job_id))).job
                return bool(job.status == common_pb2.JOB_STATUS_RUNNING)

            await eventually(running, 30, "the job runs")
            cancelled = await stubs["scheduler"].CancelJob(scheduler_pb2.CancelJobRequest(job_id=job_id))
            assert cancelled.job.cancel_requested

            async def ended() -> common_pb2.Job | None:
                job = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=job_id))).job
                return job if job.status in TERMINAL else None

            job = await eventually(ended, 15, "the cancelled job ends")
            assert job.status == CANCELLED
            scan = (await stubs["scanner"].GetScan(scanner_pb2.GetScanRequest(scan_id=job.scan_id))).scan
            assert scan.status == common_pb2.SCAN_STATUS_CANCELLED
        finally:
            await ctl.clear_faults()


async def test_a_direct_scan_library_call_is_recorded_and_a_trigger_meanwhile_returns_it(
    stubs: dict[str, Any], fakes: list[dict[str, Any]]
) -> None:
    slow = next(lib for lib in await libraries(stubs) if lib.name == "Slow")
    async with FakePlexControl(fakes[0]["url"]) as ctl:
        await ctl.add_fault("latency", path_prefix=f"/library/sections/{slow.plex_key}/all", latency_ms=300)
        try:
            scan = (await stubs["scanner"].ScanLibrary(scanner_pb2.ScanLibraryRequest(
                library_id=slow.id, mode=common_pb2.SCAN_MODE_DEEP))).scan  # fmt: skip

            async def adopted() -> common_pb2.Job | None:
                jobs = await all_jobs(stubs, library_id=slow.id)
                return next((j for j in jobs if j.scan_id == scan.id), None)

            job = await eventually(adopted, 15, "the direct scan appears in job history")
            assert job.trigger == common_pb2.JOB_TRIGGER_DIRECT
            again = await stubs["scheduler"].TriggerSync(scheduler_pb2.TriggerSyncRequest(library_id=slow.id))
            if job.status == common_pb2.JOB_STATUS_RUNNING:
                assert again.jobs[0].id == job.id, "a trigger for a running library returns the running job"
        finally:
            await ctl.clear_faults()

    async def quiet() -> bool:
        jobs = await all_jobs(stubs, library_id=slow.id)
        return all(j.status in TERMINAL for j in jobs)

    await eventually(quiet, 60, "the direct scan (and any job it held off) ends")
    jobs = await all_jobs(stubs, library_id=slow.id)
    direct = next(j for j in jobs if j.scan_id == scan.id)
    assert direct.status == SUCCEEDED and direct.counts.seen == 60


async def test_a_job_whose_every_delivery_dies_fails_with_the_reason(
    stubs: dict[str, Any], cluster: dict[str, Replicas], fakes: list[dict[str, Any]]
) -> None:
    """PLEXSYNC_SCAN_JOB_MAX_DELIVER (3) deliveries, each scanner killed mid-scan: JetStream gives up, and so does
    the job, with a reason; the scanners are restarted each time, so only the job is lost, never a scanner."""
    slow = next(lib for lib in await libraries(stubs) if lib.name == "Slow")
    async with FakePlexControl(fakes[0]["url"]) as ctl:
        await ctl.add_fault("latency", path_prefix=f"/library/sections/{slow.plex_key}/all", latency_ms=HOLD_MS)
        try:
            request = scheduler_pb2.TriggerSyncRequest(library_id=slow.id, mode=common_pb2.SCAN_MODE_DEEP)
            triggered = (await stubs["scheduler"].TriggerSync(request)).jobs[0]
            assert triggered.trigger == common_pb2.JOB_TRIGGER_MANUAL and triggered.attempt == 0
            job_id = triggered.id
            for attempt in (1, 2, 3):

                async def running(n: int = attempt) -> common_pb2.Job | None:
                    job = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=job_id))).job
                    return job if job.status == common_pb2.JOB_STATUS_RUNNING and job.attempt == n else None

                job = await eventually(running, 30, f"attempt {attempt} runs")
                port = cluster["scanner"].kill(int(job.replica.split(":")[1]))
                cluster["scanner"].start(port)

            async def ended() -> common_pb2.Job | None:
                job = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=job_id))).job
                return job if job.status in TERMINAL else None

            job = await eventually(ended, 30, "the job fails once its deliveries are used up")
            assert job.status == FAILED and "handed to scanners 3 times" in job.error, job.error
        finally:
            await ctl.clear_faults()
    again = await stubs["scheduler"].TriggerSync(scheduler_pb2.TriggerSyncRequest(library_id=slow.id))

    async def recovered() -> bool:
        job = (await stubs["scheduler"].GetJob(scheduler_pb2.GetJobRequest(job_id=again.jobs[0].id))).job
        return bool(job.status == SUCCEEDED)

    await eventually(recovered, 60, "the library scans again afterwards")


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (scheduler_pb2.TriggerSyncRequest(), grpc.StatusCode.INVALID_ARGUMENT, "target"),
        (scheduler_pb2.TriggerSyncRequest(library_id="00000000-0000-0000-0000-000000000000"),
         grpc.StatusCode.NOT_FOUND, ""),
        (scheduler_pb2.GetJobRequest(job_id="nope"), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
        (scheduler_pb2.GetJobRequest(job_id="00000000-0000-0000-0000-000000000000"), grpc.StatusCode.NOT_FOUND, ""),
        (scheduler_pb2.ListJobsRequest(page_token="forged"), grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
    ],
)  # fmt: skip
async def test_bad_requests_get_clear_errors(stubs: dict[str, Any], request_: Any, code: Any, field: str) -> None:
    method = {"TriggerSyncRequest": "TriggerSync", "GetJobRequest": "GetJob", "ListJobsRequest": "ListJobs"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stubs["scheduler"], method[type(request_).__name__])(request_)
    assert err.value.code() == code, err.value.details()
    assert field in (err.value.details() or "")


async def test_bad_schedules_name_the_field_and_change_nothing(stubs: dict[str, Any]) -> None:
    lib = next(lib for lib in await libraries(stubs) if lib.name == "B2")
    before = (await stubs["scheduler"].GetSchedule(scheduler_pb2.GetScheduleRequest(library_id=lib.id))).schedule
    cases = [
        (scheduler_pb2.Schedule(library_id=lib.id, window=scheduler_pb2.TimeWindow(start="25:00", end="01:00")),
         ["window"], "schedule.window.start"),
        (scheduler_pb2.Schedule(library_id=lib.id, window=scheduler_pb2.TimeWindow(start="01:00", end="02:00",
                                                                                    time_zone="Mars/Olympus")),
         ["window"], "schedule.window.time_zone"),
        (scheduler_pb2.Schedule(library_id=lib.id, refresh_interval=duration_pb2.Duration(seconds=3)),
         ["refresh_interval"], "schedule.refresh_interval"),
        (scheduler_pb2.Schedule(library_id=lib.id, deep_every=-1), ["deep_every"], "schedule.deep_every"),
        (scheduler_pb2.Schedule(library_id=lib.id), ["next_run_time"], "update_mask.paths[0]"),
    ]  # fmt: skip
    for schedule, paths, field in cases:
        request = scheduler_pb2.UpdateScheduleRequest(schedule=schedule,
                                                      update_mask=field_mask_pb2.FieldMask(paths=paths))  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs["scheduler"].UpdateSchedule(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in (err.value.details() or ""), field
    after = (await stubs["scheduler"].GetSchedule(scheduler_pb2.GetScheduleRequest(library_id=lib.id))).schedule
    assert (after.refresh_interval, after.window, after.deep_every) == (
        before.refresh_interval, before.window, before.deep_every)  # fmt: skip
    good = scheduler_pb2.Schedule(library_id=lib.id, deep_every=3, deep_interval=duration_pb2.Duration(seconds=86400))
    got = (
        await stubs["scheduler"].UpdateSchedule(
            scheduler_pb2.UpdateScheduleRequest(
                schedule=good, update_mask=field_mask_pb2.FieldMask(paths=["deep_every", "deep_interval"])
            )
        )
    ).schedule
    assert (got.deep_every, got.effective_deep_every, got.deep_interval.seconds) == (3, 3, 86400)  # fmt: skip
