"""A whole plexsync for fault tests: a private PostgreSQL (so it can be SIGKILLed), the shared NATS, fakeplex and
catalog, auth, scheduler and scanner as real processes, each killable and restartable on its own port (as
Kubernetes restarts a pod), and `converge`, the one check every fault test ends with: after the fault is cleared,
a sync makes the catalog exactly Plex's library again, with nothing stuck, lost, doubled or wrongly missing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import nats
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy
from plexsync.common.clients import all_pages
from plexsync.devstack import infra
from plexsync.devstack.process import ChildProcess, start_service
from plexsync.fakeplex import FakePlexControl
from plexsync.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    events_pb2,
    scanner_pb2,
    scanner_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

from tests.integration.scanner.support import comparable, expected_item, fakeplex_items, fakeplex_process
from tests.support.stack import ServiceStack, fresh_database, reset_jetstream

T = TypeVar("T")

SERVICES = ("catalog", "auth", "scheduler", "scanner")
FNF = common_pb2.ITEM_STATE_FILE_NOT_FOUND
DEEP, INCREMENTAL = common_pb2.SCAN_MODE_DEEP, common_pb2.SCAN_MODE_INCREMENTAL
JOB_ACTIVE = {common_pb2.JOB_STATUS_PENDING, common_pb2.JOB_STATUS_QUEUED, common_pb2.JOB_STATUS_RUNNING}
JOB_TERMINAL = {common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED}
SCAN_ACTIVE = {common_pb2.SCAN_STATUS_PENDING, common_pb2.SCAN_STATUS_RUNNING}
LIFECYCLE = ("started", "completed", "failed", "cancelled")
ACK_WAIT = 3.0

# ~200 movies and a few shows: with 20 ms per Plex request, one metadata request per 2 items and one at a time,
# a deep scan takes a few seconds, long enough to be hit half-way.
SPEC: dict[str, Any] = {
    "seed": 16,
    "sections": [
        {"kind": "movie", "title": "Movies", "count": 200},
        {"kind": "show", "title": "Shows", "count": 4, "seasons": 2, "episodes": 5},
    ],
}
TYPES = {
    common_pb2.LIBRARY_KIND_MOVIES: [(1, common_pb2.ITEM_KIND_MOVIE)],
    common_pb2.LIBRARY_KIND_SHOWS: [
        (2, common_pb2.ITEM_KIND_SHOW),
        (3, common_pb2.ITEM_KIND_SEASON),
        (4, common_pb2.ITEM_KIND_EPISODE),
    ],
}
SCANNER_ENV = {
    "PLEXSYNC_SCAN_PAGE_SIZE": "20",
    "PLEXSYNC_SCAN_CONCURRENCY": "1",
    "PLEXSYNC_SCAN_BATCH_SIZE": "10",
    "PLEXSYNC_SCAN_METADATA_BATCH": "2",
    "PLEXSYNC_SCAN_LISTING_WORKER": "false",
    "PLEXSYNC_SCAN_PROGRESS_INTERVAL_SECONDS": "0.2",
    "PLEXSYNC_SCAN_MAX_JOBS": "2",
    "PLEXSYNC_SCAN_JOB_ACK_WAIT_SECONDS": str(ACK_WAIT),
    "PLEXSYNC_SCAN_JOB_MAX_DELIVER": "5",
    "PLEXSYNC_SCAN_STALE_SECONDS": "5",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_PLEX_MAX_RETRIES": "3",
    "PLEXSYNC_PLEX_TIMEOUT_SECONDS": "5",
}
SCHEDULER_ENV = {
    "PLEXSYNC_SCHEDULER_TICK_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS": "2",
    "PLEXSYNC_SCHEDULER_RECONCILE_SECONDS": "1",
    "PLEXSYNC_SCHEDULER_LEADER_POLL_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_DEEP_INTERVAL_SECONDS": "0",
}


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.1)


@dataclass
class PrivateNats:
    """A NATS server of the caller's own, stopped and started again on the same port and store (as a restarted
    NATS pod keeps its Service address and its JetStream volume)."""

    store_dir: Path
    log_file: Path
    port: int = 0
    pid: int = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not self.port:
            url, self.pid = infra.start_nats(self.store_dir, self.log_file)
            self.port = int(url.rsplit(":", 1)[1])
            return
        binary = infra.nats_server_binary()
        command = [binary, "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = proc.pid
        infra.wait_for_port("127.0.0.1", self.port)

    def stop(self) -> None:
        infra.terminate(self.pid, timeout=5)
        self.pid = 0


@dataclass
class Damage:
    """What a catalog compared with Plex got wrong (rating keys as "library/key"); falsy when nothing."""

    compared: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    wrongly_missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    libraries_missing: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.lost or self.duplicated or self.wrongly_missing or self.extra or self.differing
            or self.libraries_missing
        )  # fmt: skip

    def __str__(self) -> str:
        parts = [f"{name} {value[:10]}" for name, value in vars(self).items() if isinstance(value, list) and value]
        return "; ".join(parts) or "nothing"


async def all_items(catalog: catalog_pb2_grpc.CatalogServiceStub, library_id: str) -> AsyncIterator[common_pb2.Item]:
    """Every item of a library, page after page, as ListItems returns them (duplicates included)."""
    token = ""
    while True:
        resp = await catalog.ListItems(
            catalog_pb2.ListItemsRequest(
                library_id=library_id, page_size=1000, page_token=token, view=catalog_pb2.ITEM_VIEW_FULL
            )
        )
        for item in resp.items:
            yield item
        token = resp.next_page_token
        if not token:
            return


@dataclass
class Cluster:
    """The running processes of one test module and typed ways to hurt them."""

    stack: ServiceStack
    pg_dir: Path | None  # None: not ours to kill
    fake: dict[str, Any]
    env: dict[str, dict[str, str]]
    children: dict[str, ChildProcess] = field(default_factory=dict)
    server_id: str = ""
    read_via: str = "local"  # the fakeplex connection the checks read Plex's library through
    nats: PrivateNats | None = None  # None: the shared NATS, not ours to stop
    memory_baseline: dict[str, int] = field(default_factory=dict)  # service -> RSS after its first convergence
    _channels: dict[tuple[str, str], grpc.aio.Channel] = field(default_factory=dict)

    # ------------------------------------------------------------------ processes
    def port(self, name: str) -> int:
        return int(self.stack.addresses[name].rsplit(":", 1)[1])

    def start(self, name: str) -> None:
        log_dir = self.stack.log_dir / name
        self.children[name] = start_service(name, self.port(name), {**self.stack.env(name), **self.env[name]}, log_dir)

    async def kill(self, name: str) -> None:
        """SIGKILL a service: no drain, no goodbye, its in-flight RPCs and NATS messages cut off."""
        child = self.children.pop(name)
        os.kill(child.pid, signal.SIGKILL)
        if child.popen is not None:
            await asyncio.to_thread(child.popen.wait, 10)

    async def restart(self, name: str) -> None:
        """Start it again on the same port, and wait until it is SERVING."""
        await asyncio.to_thread(self.start, name)
        self.memory_baseline.pop(name, None)  # a new process: its baseline is taken anew

    async def kill_postgres(self) -> None:
        assert self.pg_dir is not None, "PostgreSQL is not the cluster's own"
        await asyncio.to_thread(infra.kill_postgres, self.pg_dir)

    async def restart_postgres(self) -> None:
        assert self.pg_dir is not None, "PostgreSQL is not the cluster's own"
        await asyncio.to_thread(infra.start_postgres, self.pg_dir)

    async def stop_nats(self) -> None:
        assert self.nats is not None, "NATS is not the cluster's own"
        await asyncio.to_thread(self.nats.stop)

    async def start_nats(self) -> None:
        assert self.nats is not None, "NATS is not the cluster's own"
        await asyncio.to_thread(self.nats.start)

    def rss(self) -> dict[str, int]:
        """Each running service's resident memory, in bytes."""
        return {name: int(psutil.Process(child.pid).memory_info().rss) for name, child in self.children.items()}

    def memory_growth(self) -> dict[str, int]:
        """Each service's RSS now minus its baseline (taken by the first `converge` after it started), in MiB."""
        now = self.rss()
        return {name: (now[name] - base) >> 20 for name, base in self.memory_baseline.items() if name in now}

    def stop_all(self) -> None:
        for name in reversed(SERVICES):
            child = self.children.pop(name, None)
            if child is not None:
                child.stop(timeout=10)

    # ------------------------------------------------------------------ clients
    def channel(self, name: str, identity: str = "cli") -> grpc.aio.Channel:
        """An aio channel (made on first use, in the running event loop)."""
        key = (name, identity)
        if key not in self._channels:
            self._channels[key] = self.stack.channel(name, identity)
        return self._channels[key]

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self.channel("catalog"))

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel("auth"))

    @property
    def scanner(self) -> scanner_pb2_grpc.ScannerServiceStub:
        return scanner_pb2_grpc.ScannerServiceStub(self.channel("scanner"))

    @property
    def scheduler(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self.channel("scheduler"))

    def control(self) -> FakePlexControl:
        """fakeplex's control API on its control listener, which stays up when every connection is down."""
        return FakePlexControl(self.fake["control_url"])

    async def aclose(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    # ------------------------------------------------------------------ driving syncs
    async def login(self) -> str:
        """A PIN login that discovers fakeplex's server and its connections (as a user signs in)."""
        pin = await self.auth.StartPinLogin(auth_pb2.StartPinLoginRequest())
        completing = asyncio.ensure_future(
            self.auth.CompletePinLogin(auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id, discover_servers=True))
        )
        await asyncio.sleep(0.3)
        async with self.control() as ctl:
            await ctl.approve_pin(pin.pin_id)
        reply = await asyncio.wait_for(completing, 15)
        [server] = [s for s in reply.servers if s.machine_identifier == self.fake["machineIdentifier"]]
        self.server_id = str(server.id)
        return self.server_id

    async def libraries(self) -> list[common_pb2.Library]:
        resp = await self.catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(page_size=1000))
        return list(resp.libraries)

    async def trigger(self, mode: common_pb2.ScanMode.ValueType = INCREMENTAL) -> list[str]:
        """TriggerSync of every library of the server (re-enumerated first); the ids of its jobs."""
        request = scheduler_pb2.TriggerSyncRequest(server_id=self.server_id, mode=mode, reason="fault test")
        resp = await self.scheduler.TriggerSync(request)
        return [job.id for job in resp.jobs]

    async def jobs(self, **filters: Any) -> list[common_pb2.Job]:
        async def page(token: str) -> tuple[list[common_pb2.Job], str]:
            resp = await self.scheduler.ListJobs(
                scheduler_pb2.ListJobsRequest(page_size=1000, page_token=token, **filters)
            )
            return list(resp.jobs), resp.next_page_token

        return await all_pages(page)

    async def scans(self, **filters: Any) -> list[common_pb2.Scan]:
        async def page(token: str) -> tuple[list[common_pb2.Scan], str]:
            resp = await self.scanner.ListScans(
                scanner_pb2.ListScansRequest(page_size=1000, page_token=token, **filters)
            )
            return list(resp.scans), resp.next_page_token

        return await all_pages(page)

    async def ended(self, job_ids: list[str], within: float = 60) -> list[common_pb2.Job]:
        async def probe() -> list[common_pb2.Job] | None:
            jobs = [(await self.scheduler.GetJob(scheduler_pb2.GetJobRequest(job_id=j))).job for j in job_ids]
            return jobs if all(j.status in JOB_TERMINAL for j in jobs) else None

        return await eventually(probe, within, f"jobs {job_ids} end")

    async def mid_scan(self, min_seen: int = 20, within: float = 30) -> common_pb2.Scan:
        """Wait until a scan of the movies is running and has seen `min_seen` items (of 200): half-way."""

        async def probe() -> common_pb2.Scan | None:
            running = await self.scans(status=common_pb2.SCAN_STATUS_RUNNING)
            return next((s for s in running if s.counts.seen >= min_seen and s.counts.total >= 100), None)

        return await eventually(probe, within, f"a scan is running and has seen {min_seen} items")

    async def lifecycle_events(self, scan_id: str, *, until: str, within: float = 20) -> list[str]:
        """The lifecycle event kinds (started, completed, failed, cancelled) NATS holds for a scan, in stream
        order, read from the events stream's start until one of kind `until` is there (or `within` s pass)."""
        nc = await nats.connect(self.stack.nats_url, connect_timeout=2, max_reconnect_attempts=3)
        kinds: list[str] = []
        arrived = asyncio.Event()

        async def on_message(msg: Any) -> None:
            event = events_pb2.ScanEvent.FromString(msg.data)
            kind = event.WhichOneof("payload") or ""
            if event.scan_id == scan_id and kind in LIFECYCLE:
                kinds.append(kind)
                if kind == until:
                    arrived.set()

        try:
            sub = await nc.jetstream().subscribe(
                "plexsync.v1.scan.*.*", cb=on_message, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), within)
            await asyncio.sleep(0.5)  # anything right behind it (a repeat, a contradiction)
            await sub.unsubscribe()
        finally:
            await nc.close()
        return kinds

    async def scan_lifecycle(self, scan_id: str, library_id: str) -> list[events_pb2.ScanEvent]:
        """The lifecycle events the events stream holds for a scan now, in stream order: the library's scan
        subjects are read from the stream's start to its last message (no waiting for more)."""
        nc = await nats.connect(self.stack.nats_url, connect_timeout=2, max_reconnect_attempts=3)
        found: list[events_pb2.ScanEvent] = []
        try:
            sub = await nc.jetstream().subscribe(
                f"plexsync.v1.scan.{library_id}.*", ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )  # fmt: skip
            while True:
                msg = await sub.next_msg(timeout=10)
                event = events_pb2.ScanEvent.FromString(msg.data)
                if event.scan_id == scan_id and event.WhichOneof("payload") in LIFECYCLE:
                    found.append(event)
                if msg.metadata.num_pending == 0:
                    break
            await sub.unsubscribe()
        finally:
            await nc.close()
        return found

    async def outbox_depth(self, schema: str) -> int:
        """Events a service's outbox still holds (written, not yet acknowledged by JetStream)."""
        async with await psycopg.AsyncConnection.connect(self.stack.database_url) as conn:
            row = await (await conn.execute(f"SELECT count(*) FROM {schema}.outbox")).fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ the check
    async def settled(self, within: float = 60) -> None:
        """No job and no scan left active (PENDING, QUEUED, RUNNING) within `within` seconds."""

        async def probe() -> bool:
            try:
                jobs, scans = await self.jobs(), await self.scans()
            except grpc.aio.AioRpcError:
                return False
            return not any(j.status in JOB_ACTIVE for j in jobs) and not any(s.status in SCAN_ACTIVE for s in scans)

        try:
            await eventually(probe, within, "every job and scan ends")
        except AssertionError:
            active = [(j.library_name, common_pb2.JobStatus.Name(j.status)) for j in await self.jobs()
                      if j.status in JOB_ACTIVE]  # fmt: skip
            stuck = [(s.id, common_pb2.ScanStatus.Name(s.status)) for s in await self.scans()
                     if s.status in SCAN_ACTIVE]  # fmt: skip
            raise AssertionError(f"still active after {within}s: jobs {active}, scans {stuck}") from None

    async def all_serving(self) -> None:
        for name in SERVICES:
            async with grpc.aio.insecure_channel(self.stack.addresses[name]) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, f"{name} is not SERVING"

    async def damage(self) -> Damage:
        """How the catalog differs from fakeplex's library, item by item, over every library."""
        damage = Damage()
        libraries = await self.libraries()
        damage.libraries_missing = sorted({s["title"] for s in SPEC["sections"]} - {lib.name for lib in libraries})
        for lib in libraries:
            expected: dict[str, common_pb2.Item] = {}
            for type_num, kind in TYPES[lib.kind]:
                url = self.fake["listeners"][self.read_via]["uri"]
                for d in await asyncio.to_thread(fakeplex_items, url, self.fake["token"], lib.plex_key, type_num):
                    expected[d["ratingKey"]] = expected_item(d, kind, lambda p: (p, common_pb2.ITEM_STATE_UNAVAILABLE))
            got: dict[str, common_pb2.Item] = {}
            async for item in all_items(self.catalog, lib.id):
                if item.rating_key in got:
                    damage.duplicated.append(f"{lib.name}/{item.rating_key}")
                got[item.rating_key] = item
            for rk, want in expected.items():
                where = f"{lib.name}/{rk}"
                if rk not in got:
                    damage.lost.append(where)
                elif got[rk].state == FNF:
                    damage.wrongly_missing.append(where)
                elif comparable(got[rk]) != want:
                    damage.differing.append(where)
            damage.extra += [f"{lib.name}/{rk}" for rk, i in got.items() if rk not in expected and i.state != FNF]
            damage.compared += len(expected)
        return damage

    async def assert_catalog_is_plex(self) -> int:
        """Every library holds exactly fakeplex's items, every field equal: none twice, none lost, none
        FILE_NOT_FOUND that Plex has, none present that Plex has not. Returns how many items were compared."""
        damage = await self.damage()
        assert not damage, f"the catalog is not Plex's library: {damage}"
        return damage.compared

    async def assert_token_works(self) -> None:
        """The server's stored token is still the one Plex accepts (the scanner's view of it)."""
        scanner_auth = auth_pb2_grpc.AuthServiceStub(self.channel("auth", "scanner"))
        creds = await scanner_auth.GetServerCredentials(
            auth_pb2.GetServerCredentialsRequest(server_id=self.server_id, recheck=True)
        )
        assert creds.token == self.fake["token"], "the stored Plex token changed"

    async def converge(self, within: float = 90) -> float:
        """After a fault is cleared: everything settles, one sync succeeds, and the catalog is Plex's library.

        Returns the seconds it took. Every step is bounded; any stuck job or scan, failed sync, lost, doubled or
        wrongly missing item fails the test with what it found."""
        started = time.monotonic()
        await self.settled(within)
        await self.all_serving()
        jobs = await self.ended(await self.trigger(), within)
        failed = [(j.library_name, j.error) for j in jobs if j.status != common_pb2.JOB_STATUS_SUCCEEDED]
        assert not failed, f"the sync after the fault failed: {failed}"
        await self.assert_catalog_is_plex()
        await self.settled(10)
        await self.all_serving()
        await self.assert_token_works()
        for name, rss in self.rss().items():
            self.memory_baseline.setdefault(name, rss)
        return time.monotonic() - started


def create_database(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "plexsync"')
    return server_url.replace("/postgres?", "/plexsync?", 1)


@contextmanager
def private_postgres(base: Path) -> Iterator[tuple[str, Path]]:
    """A PostgreSQL of the module's own (its data in base/pg), so killing it hurts nobody else."""
    pg_dir = base / "pg"
    server_url, _ = infra.start_postgres(pg_dir)
    try:
        yield create_database(server_url), pg_dir
    finally:
        infra.stop_postgres(pg_dir)


@contextmanager
def running_cluster(
    base: Path, nats: str | PrivateNats, *, fakeplex_args: tuple[str, ...] = (), database_server_url: str | None = None
) -> Iterator[Cluster]:
    """Everything started and stopped afterwards. PostgreSQL is private unless `database_server_url` names a
    server to make a fresh database on (then `kill_postgres` is refused: it is somebody else's); NATS is the
    shared one at a URL, or a `PrivateNats` (started already) that `stop_nats` may stop."""
    nats_url = nats if isinstance(nats, str) else nats.url
    with ExitStack() as stack_of:
        if database_server_url:
            database_url, pg_dir = stack_of.enter_context(fresh_database(database_server_url)), None
        else:
            database_url, pg_dir = stack_of.enter_context(private_postgres(base))
        asyncio.run(reset_jetstream(nats_url))
        args = ("--library-spec", json.dumps(SPEC), "--latency-ms", "20", "--control-listen", "127.0.0.1:0")
        fake = stack_of.enter_context(fakeplex_process(base, *args, *fakeplex_args))
        stack = ServiceStack(database_url=database_url, nats_url=nats_url, log_dir=base / "logs")
        stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        for name in SERVICES:
            stack.reserve(name)
        env = {
            "catalog": {},
            "auth": {
                "PLEXSYNC_PLEX_TV_URL": fake["control_url"],
                "PLEXSYNC_GDM_ENABLED": "false",
                "PLEXSYNC_PROBE_TIMEOUT_SECONDS": "1",
                "PLEXSYNC_PLEX_TIMEOUT_SECONDS": "3",
                "PLEXSYNC_PIN_POLL_INTERVAL_SECONDS": "0.1",
            },
            "scheduler": SCHEDULER_ENV,
            "scanner": SCANNER_ENV,
        }
        cluster = Cluster(stack=stack, pg_dir=pg_dir, fake=fake, env=env, nats=None if isinstance(nats, str) else nats)
        stack_of.callback(cluster.stop_all)
        for name in SERVICES:
            cluster.start(name)
        yield cluster
