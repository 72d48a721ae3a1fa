"""Real-time sync benchmark: how far behind Plex the catalog is, from a change in fakeplex to the catalog's
commit and to a ``WatchChanges`` client, for single edits and for a 1,000-item burst.

    .venv/bin/python bench/realtime.py                  # 30 single edits + a 1,000-movie burst, 3 runs
    .venv/bin/python bench/realtime.py --quick          # 10 edits + a 200-movie burst, 1 run: a sanity check
    .venv/bin/python bench/realtime.py --edits 50 --burst 2000 --runs 5 --latency-ms 20

PostgreSQL and NATS are embedded (plexsync.devstack) unless DATABASE_URL / NATS_URL are set. Every run starts
from nothing: a fresh database, the JetStream streams deleted, fakeplex (``--latency-ms`` per Plex request: a
server across a network), catalog, auth, the scheduler (no periodic scans) and one scanner with the watcher
on, as real processes. The server is added and synced once; then, with a ``WatchChanges`` client following
the library:

- **single edits**: one title change in fakeplex at a time (the next once the last reached the client);
  the delay is from just before the control call to the change's ``commit_time`` (catalog) and to its
  arrival at the client;
- **burst**: ``--burst`` movies added in one go (fakeplex's bulk route: one import, as Plex announces it);
  the delay of each item from just before the call to its commit and its arrival, and how many WriteItems
  batches (distinct commit times) and metadata requests it took.

"Plex requests per change" counts every request fakeplex served during the phase (metadata fetches, and the
deletion checks when there are any) divided by the changes. All processes run on this machine, so their clocks
agree. The machine may be shared: quote medians of several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from google.protobuf import timestamp_pb2  # noqa: E402
from plexsync.devstack import infra  # noqa: E402
from plexsync.fakeplex import FakePlexControl  # noqa: E402
from plexsync.v1 import (  # noqa: E402
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

from bench.scale_out import delete_streams, percentile, wait_jobs  # noqa: E402
from bench.support import bench_infra, load_average  # noqa: E402
from tests.integration.scanner.support import fakeplex_process  # noqa: E402
from tests.support.stack import ServiceStack, fresh_database  # noqa: E402

SCHEDULER_ENV = {
    "PLEXSYNC_SCHEDULER_REFRESH_INTERVAL_SECONDS": "86400",  # nothing scheduled: every change comes in real time
    "PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS": "86400",
}
SCANNER_ENV = {"PLEXSYNC_REALTIME_ENABLED": "true", "PLEXSYNC_REALTIME_SERVERS_POLL_SECONDS": "1"}


@dataclass
class Phase:
    """One phase of a run: per change, the delays (seconds) to the commit and to the client."""

    changes: int = 0
    to_commit: list[float] = field(default_factory=list)
    to_client: list[float] = field(default_factory=list)
    plex_requests: int = 0
    metadata_requests: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def requests_per_change(self) -> float:
        return self.plex_requests / self.changes if self.changes else 0.0


@dataclass
class Run:
    single: Phase
    burst: Phase


def _ts(t: timestamp_pb2.Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


class ChangeFollower:
    """A WatchChanges client: the arrival time of each change, by rating key and kind."""

    def __init__(self, stub: catalog_pb2_grpc.CatalogServiceStub, library_id: str) -> None:
        self.stub, self.library_id = stub, library_id
        self.arrived: dict[tuple[str, int], tuple[float, common_pb2.ItemChange]] = {}
        self._news = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        call = self.stub.WatchChanges(catalog_pb2.WatchChangesRequest(library_id=self.library_id))
        async for reply in call:
            now = time.time()
            for change in reply.changes:
                self.arrived[(change.rating_key, change.kind)] = (now, change)
            self._news.set()

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[ChangeFollower]:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(1.0)  # the stream starts "from now": let it open first
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def wait_for(self, keys: set[tuple[str, int]], within: float) -> None:
        deadline = time.monotonic() + within
        while not keys <= self.arrived.keys():
            if self._task is not None and self._task.done():
                self._task.result()
            self._news.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(keys - self.arrived.keys())} of {len(keys)} changes not seen in {within}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(left, 1.0))


async def _metadata_requests(ctl: FakePlexControl) -> int:
    stats = await ctl.stats()
    return sum(n for route, n in stats.items() if route.startswith("GET /library/metadata/"))


async def _wait_watcher(stub: scanner_pb2_grpc.ScannerServiceStub, server_id: str, library_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        resp = await stub.ListWatchers(scanner_pb2.ListWatchersRequest(server_id=server_id))
        if any(w.state == scanner_pb2.WATCHER_STATE_CONNECTED and library_id in w.library_ids for w in resp.watchers):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the watcher did not connect within 60 s")


async def measure(args: argparse.Namespace, fake: dict[str, Any], stack: ServiceStack) -> Run:
    channels = {name: stack.channel(name) for name in ("auth", "catalog", "scanner", "scheduler")}
    try:
        auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
        catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
        scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
        scheduler = scheduler_pb2_grpc.SchedulerServiceStub(channels["scheduler"])
        server = (await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"]))).server
        triggered = await scheduler.TriggerSync(scheduler_pb2.TriggerSyncRequest(server_id=server.id))
        await wait_jobs(scheduler, {j.id for j in triggered.jobs}, 600)
        [library] = (await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server.id))).libraries
        await _wait_watcher(scanner, server.id, library.id)
        keys: list[str] = []
        page = ""
        while True:
            listed = await catalog.ListItems(
                catalog_pb2.ListItemsRequest(library_id=library.id, page_size=1000, page_token=page)
            )
            keys += [i.rating_key for i in listed.items]
            page = listed.next_page_token
            if not page:
                break
        async with FakePlexControl(fake["url"]) as ctl, ChangeFollower(catalog, library.id).following() as follower:
            single = Phase()
            await ctl.reset_stats()
            commits: set[float] = set()
            started = time.monotonic()
            for n in range(args.edits):
                rk = keys[n % len(keys)]
                t0 = time.time()
                await ctl.change(rk, title=f"Edited {n}")
                key: tuple[str, int] = (rk, common_pb2.CHANGE_KIND_UPDATED)
                follower.arrived.pop(key, None)
                await follower.wait_for({key}, 30)
                arrived, change = follower.arrived[key]
                commits.add(_ts(change.commit_time))
                single.to_commit.append(_ts(change.commit_time) - t0)
                single.to_client.append(arrived - t0)
                await asyncio.sleep(args.pause)
            single.seconds = time.monotonic() - started
            single.changes = args.edits
            single.plex_requests = await ctl.total_requests()
            single.metadata_requests = await _metadata_requests(ctl)
            single.batches = len(commits)

            burst = Phase()
            await ctl.reset_stats()
            started = time.monotonic()
            t0 = time.time()
            added = await ctl.add_items_bulk(int(library.plex_key), args.burst)
            wanted: set[tuple[str, int]] = {(rk, common_pb2.CHANGE_KIND_ADDED) for rk in added}
            await follower.wait_for(wanted, 300)
            burst.seconds = time.monotonic() - started
            for each in wanted:
                arrived, change = follower.arrived[each]
                burst.to_commit.append(_ts(change.commit_time) - t0)
                burst.to_client.append(arrived - t0)
            burst.changes = len(wanted)
            burst.batches = len({_ts(follower.arrived[k][1].commit_time) for k in wanted})
            burst.plex_requests = await ctl.total_requests()
            burst.metadata_requests = await _metadata_requests(ctl)
        return Run(single, burst)
    finally:
        for channel in channels.values():
            await channel.close()


async def one_run(args: argparse.Namespace, database_server: str, nats_url: str) -> Run:
    await delete_streams(nats_url)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-realtime-", dir=infra.DEV_DIR))
    spec = json.dumps({"seed": args.seed, "sections": [{"kind": "movie", "title": "Movies", "count": args.movies}]})
    fake_args = ["--library-spec", spec, "--latency-ms", str(args.latency_ms)]
    with fresh_database(database_server) as database_url, fakeplex_process(log_dir, *fake_args) as fake:
        stack = ServiceStack(database_url=database_url, nats_url=nats_url, log_dir=log_dir)
        stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "bench:" + base64.b64encode(secrets.token_bytes(32)).decode()
        stack.extra_env["PLEXSYNC_LOG_LEVEL"] = "WARNING"
        try:
            for name in ("catalog", "auth", "scanner", "scheduler"):
                stack.reserve(name)
            stack.start("catalog")
            stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
            stack.start("scheduler", **SCHEDULER_ENV)
            stack.start("scanner", **SCANNER_ENV)
            run = await measure(args, fake, stack)
        finally:
            stack.stop_all()
    shutil.rmtree(log_dir, ignore_errors=True)
    return run


def _ms(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):.0f} / {1000 * percentile(values, 99):.0f}"


def fmt_phase(name: str, p: Phase) -> str:
    return (
        f"  {name}: {p.changes} changes in {p.seconds:.1f} s; to commit {_ms(p.to_commit)} ms, to client "
        f"{_ms(p.to_client)} ms (median / p99); {p.requests_per_change:.2f} Plex requests per change "
        f"({p.metadata_requests} metadata requests), {p.batches} batches"
    )


def summarize(args: argparse.Namespace, runs: list[Run]) -> None:
    print()
    print(
        f"1 movie library of {args.movies} movies, fakeplex --latency-ms {args.latency_ms:g}, debounce and batching "
        f"at the scanner's defaults; {len(runs)} run(s), delays pooled over the runs (median / p99), other columns "
        "the median of the runs:"
    )
    print(
        "| phase | changes per run | change → catalog commit (ms, median / p99) | change → WatchChanges client (ms, "
        "median / p99) | Plex requests per change | metadata requests | WriteItems batches | seconds |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for name, phases in (
        ("single edits", [r.single for r in runs]),
        (f"burst of {args.burst} adds", [r.burst for r in runs]),
    ):
        commit = [d for p in phases for d in p.to_commit]
        client = [d for p in phases for d in p.to_client]
        print(
            f"| {name} | {phases[0].changes} | {_ms(commit)} | {_ms(client)} "
            f"| {statistics.median(p.requests_per_change for p in phases):.2f} "
            f"| {statistics.median(p.metadata_requests for p in phases):.0f} "
            f"| {statistics.median(p.batches for p in phases):.0f} "
            f"| {statistics.median(p.seconds for p in phases):.1f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--movies", type=int, default=500, help="movies in the library before the measurements")
    p.add_argument("--edits", type=int, default=30, help="single edits per run, one at a time")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between two single edits")
    p.add_argument("--burst", type=int, default=1000, help="movies added at once")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--latency-ms", type=float, default=10.0, help="fakeplex's delay per Plex request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="10 edits, a 200-movie burst, 100 movies, 1 run")
    args = p.parse_args()
    if args.quick:
        args.edits, args.burst, args.movies, args.runs = 10, 200, 100, 1
    print(f"load average before: {load_average()}", flush=True)
    runs: list[Run] = []
    with bench_infra() as (db, nats_url):
        for n in range(args.runs):
            run = asyncio.run(one_run(args, db, nats_url))
            runs.append(run)
            print(f"run {n + 1}:\n{fmt_phase('single edits', run.single)}\n{fmt_phase('burst', run.burst)}", flush=True)
    print(f"load average after: {load_average()}", flush=True)
    summarize(args, runs)


if __name__ == "__main__":
    main()
