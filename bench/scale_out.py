"""Scale-out benchmark: one TriggerSync of every library, run by 1, 2, then 4 scanner replicas sharing the
scheduler's JetStream work queue.

    .venv/bin/python bench/scale_out.py                   # 8 movie sections x 300 movies, 3 runs per replica count
    .venv/bin/python bench/scale_out.py --quick           # 8 x 40 movies, 1 run each: a sanity check
    .venv/bin/python bench/scale_out.py --sections 12 --movies 500 --replicas 1,2,3,4 --max-jobs 2

PostgreSQL and NATS are embedded (plexsync.devstack) unless DATABASE_URL / NATS_URL are set. Every run starts
from nothing: a fresh database, the JetStream streams deleted, and fakeplex (``--latency-ms``, a server across
a network; its page cache cold), catalog, auth, the scheduler and N scanners started as real processes. The
benchmark adds the server (AuthService.AddServer), calls ``SchedulerService.TriggerSync(all=True)`` and polls
ListJobs until every job has ended, so each run does the same work. Per replica count it prints the median
seconds (trigger → the last job's end), items/s, the speed-up over one replica, the scanners' peak RSS, how
the jobs spread over the replicas, the CPU seconds by process, and per job how long it took from the trigger to
a scanner starting it (the job's ``create_time`` → ``start_time``: includes waiting for a free scanner when
there are more libraries than scanner slots) and from a scanner slot being free to the start (the scheduler's
and the queue's own overhead). The machine may be shared: compare medians taken at similar load.
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.js.errors import NotFoundError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from google.protobuf import timestamp_pb2  # noqa: E402
from plexsync.devstack import infra  # noqa: E402
from plexsync.devstack.infra import free_port  # noqa: E402
from plexsync.devstack.process import start_service  # noqa: E402
from plexsync.v1 import auth_pb2, auth_pb2_grpc, common_pb2, scheduler_pb2, scheduler_pb2_grpc  # noqa: E402

from bench.scan import cpu_snapshot, cpu_used, quiesce  # noqa: E402
from bench.support import PeakRss, bench_infra, load_average  # noqa: E402
from tests.integration.scanner.support import fakeplex_process  # noqa: E402
from tests.support.stack import ServiceStack, fresh_database  # noqa: E402

ENDED = {common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED}
MODES = {"incremental": common_pb2.SCAN_MODE_INCREMENTAL, "deep": common_pb2.SCAN_MODE_DEEP}


@dataclass
class Run:
    """One TriggerSync of every library with `replicas` scanners, and what it took."""

    replicas: int
    libraries: int
    items: int
    seconds: float
    peak_rss_mb: list[float]  # per scanner (main process)
    peak_workers_mb: list[float]  # per scanner, its worker processes together
    trigger_to_start_ms: list[float]
    free_to_start_ms: list[float]
    jobs_per_replica: list[int]
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def _ts(t: timestamp_pb2.Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


def free_slot_times(jobs: list[common_pb2.Job], slots: int) -> list[float]:
    """When a scanner slot was free for each job: its create time, or later if every slot of the cluster was busy
    then — the end of the last job that freed a full cluster before this job started."""
    spans = [(_ts(j.create_time), _ts(j.start_time), _ts(j.end_time)) for j in jobs]
    out = []
    for i, (created, started, _) in enumerate(spans):
        free = created
        for k, (_, _, end) in enumerate(spans):
            if k == i or not created < end <= started:
                continue
            busy = sum(1 for n, (_, s, e) in enumerate(spans) if n != i and s < end <= e)
            if busy >= slots:
                free = max(free, end)
        out.append(free)
    return out


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (with a few dozen jobs p99 is the slowest one)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def delete_streams(nats_url: str) -> None:
    """A run starts with no jobs, events or consumers left from the one before (services are stopped)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for name in ("PLEXSYNC_JOBS", "PLEXSYNC_EVENTS"):
            try:
                await js.delete_stream(name)
            except NotFoundError:
                pass
    finally:
        await nc.close()


async def wait_jobs(stub: Any, ids: set[str], within: float) -> list[common_pb2.Job]:
    """Poll ListJobs (the run's database holds only this trigger's jobs) until every job has ended."""
    deadline = time.monotonic() + within
    while True:
        jobs: dict[str, common_pb2.Job] = {}
        token = ""
        while True:
            page = await stub.ListJobs(scheduler_pb2.ListJobsRequest(page_size=1000, page_token=token))
            jobs.update((j.id, j) for j in page.jobs if j.id in ids)
            token = page.next_page_token
            if not token:
                break
        if len(jobs) == len(ids) and all(j.status in ENDED for j in jobs.values()):
            return list(jobs.values())
        if time.monotonic() > deadline:
            states = Counter(common_pb2.JobStatus.Name(j.status) for j in jobs.values())
            raise TimeoutError(f"jobs not ended within {within:.0f}s: {dict(states)}")
        await asyncio.sleep(0.25)


def library_spec(args: argparse.Namespace) -> str:
    sections = [{"kind": "movie", "title": f"Movies {n + 1}", "count": args.movies} for n in range(args.sections)]
    return json.dumps({"seed": args.seed, "sections": sections})


async def one_run(args: argparse.Namespace, replicas: int, database_server: str, nats_url: str) -> Run:
    await delete_streams(nats_url)
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{replicas}-", dir=infra.DEV_DIR))
    fake_args = ["--library-spec", library_spec(args), "--latency-ms", str(args.latency_ms)]
    max_running = max(args.max_running, replicas * args.max_jobs)
    with fresh_database(database_server) as database_url, fakeplex_process(log_dir, *fake_args) as fake:
        stack = ServiceStack(database_url=database_url, nats_url=nats_url, log_dir=log_dir)
        stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "bench:" + base64.b64encode(secrets.token_bytes(32)).decode()
        stack.extra_env["PLEXSYNC_LOG_LEVEL"] = "WARNING"
        try:
            for name in ("catalog", "auth", "scanner", "scheduler"):
                stack.reserve(name)
            stack.start("catalog")
            stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
            scanner_env = {**stack.env("scanner"), "PLEXSYNC_SCAN_MAX_JOBS": str(args.max_jobs)}
            scanners = []
            for n in range(replicas):
                port = int(stack.addresses["scanner"].rsplit(":", 1)[1]) if n == 0 else free_port()
                child = start_service("scanner", port, scanner_env, log_dir / f"scanner-{n + 1}")
                stack.children.append(child)
                scanners.append(child)
            stack.start(
                "scheduler",
                PLEXSYNC_SCHEDULER_MAX_RUNNING=str(max_running),
                PLEXSYNC_SCHEDULER_MAX_RUNNING_PER_SERVER=str(max_running),
            )
            auth_ch, sched_ch = stack.channel("auth"), stack.channel("scheduler")
            try:
                auth = auth_pb2_grpc.AuthServiceStub(auth_ch)
                scheduler = scheduler_pb2_grpc.SchedulerServiceStub(sched_ch)
                await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"]))
                await asyncio.to_thread(quiesce, database_url)
                cpu0 = cpu_snapshot()
                rss = [PeakRss(child.pid) for child in scanners]
                with contextlib.ExitStack() as sampling:
                    for sampler in rss:
                        sampling.enter_context(sampler)
                    t0 = time.time()
                    triggered = await scheduler.TriggerSync(
                        scheduler_pb2.TriggerSyncRequest(all=True, mode=MODES[args.mode])
                    )
                    jobs = await wait_jobs(scheduler, {j.id for j in triggered.jobs}, args.timeout)
                cpu = cpu_used(cpu0, cpu_snapshot())
            finally:
                await auth_ch.close()
                await sched_ch.close()
        finally:
            stack.stop_all()
    failed = [j for j in jobs if j.status != common_pb2.JOB_STATUS_SUCCEEDED]
    if failed or len(jobs) != args.sections:
        detail = "; ".join(f"{j.library_name}: {common_pb2.JobStatus.Name(j.status)} {j.error}" for j in failed)
        raise RuntimeError(f"{len(jobs)} jobs for {args.sections} sections, {len(failed)} not succeeded: {detail}")
    shutil.rmtree(log_dir, ignore_errors=True)
    free = free_slot_times(jobs, min(max_running, replicas * args.max_jobs))
    return Run(
        replicas=replicas,
        libraries=len(jobs),
        items=sum(j.counts.seen for j in jobs),
        seconds=max(_ts(j.end_time) for j in jobs) - t0,
        peak_rss_mb=[r.peak / 1e6 for r in rss],
        peak_workers_mb=[r.peak_children / 1e6 for r in rss],
        trigger_to_start_ms=[1000 * (_ts(j.start_time) - _ts(j.create_time)) for j in jobs],
        free_to_start_ms=[1000 * (_ts(j.start_time) - f) for j, f in zip(jobs, free, strict=True)],
        jobs_per_replica=sorted(Counter(j.replica for j in jobs).values(), reverse=True),
        cpu=cpu,
    )


def fmt_run(run: Run) -> str:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.cpu.items())
    return (
        f"  {run.replicas} scanner(s): {run.seconds:.2f} s, {run.items:,} items, {run.rate:,.0f} items/s, "
        f"jobs per replica {'/'.join(map(str, run.jobs_per_replica))}, peak RSS "
        f"{'/'.join(f'{r:.0f}' for r in run.peak_rss_mb)} MB, trigger→start median "
        f"{statistics.median(run.trigger_to_start_ms):.0f} ms, CPU s: {cpu}"
    )


def summarize(args: argparse.Namespace, runs: dict[int, list[Run]]) -> None:
    print()
    print(
        f"{args.sections} movie sections x {args.movies} movies, fakeplex --latency-ms {args.latency_ms:g}, "
        f"{args.mode} scans, PLEXSYNC_SCAN_MAX_JOBS={args.max_jobs} per scanner, median of {args.runs} run(s):"
    )
    print(
        "| scanner replicas | libraries | items | seconds | items/s | speed-up vs 1 | scanner peak RSS (MB, max;"
        " + workers) | jobs per replica | trigger → start (ms, median / p99) | free slot → start (ms, median /"
        " p99) | CPU seconds by process |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
    )
    base: float | None = None
    for replicas, rs in runs.items():
        seconds = statistics.median(r.seconds for r in rs)
        base = base if base is not None else seconds
        items = rs[0].items
        trig = [ms for r in rs for ms in r.trigger_to_start_ms]
        free = [ms for r in rs for ms in r.free_to_start_ms]
        middle = sorted(rs, key=lambda r: r.seconds)[len(rs) // 2]
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in middle.cpu.items())
        print(
            f"| {replicas} | {rs[0].libraries} | {items:,} | {seconds:.2f} | {items / seconds:,.0f} "
            f"| {base / seconds:.2f}x | {max(m for r in rs for m in r.peak_rss_mb):.0f} "
            f"(+{max(m for r in rs for m in r.peak_workers_mb):.0f}) | {'/'.join(map(str, middle.jobs_per_replica))} "
            f"| {statistics.median(trig):.0f} / {percentile(trig, 99):.0f} "
            f"| {statistics.median(free):.0f} / {percentile(free, 99):.0f} | {cpu} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", type=int, default=8, help="movie library sections on the fakeplex server")
    p.add_argument("--movies", type=int, default=300, help="movies per section")
    p.add_argument("--replicas", default="1,2,4", help="scanner replica counts to compare, the first is the base")
    p.add_argument("--runs", type=int, default=3, help="runs per replica count (median quoted)")
    p.add_argument("--max-jobs", type=int, default=1, help="PLEXSYNC_SCAN_MAX_JOBS: jobs per scanner at once")
    p.add_argument("--max-running", type=int, default=8, help="the scheduler's limits (raised to replicas x jobs)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="fakeplex's delay per Plex request")
    p.add_argument("--mode", choices=sorted(MODES), default="deep")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a run may take")
    p.add_argument("--quick", action="store_true", help="8 sections x 40 movies, 1 run per replica count")
    args = p.parse_args()
    if args.quick:
        args.movies, args.runs = 40, 1
    counts = [int(x) for x in args.replicas.split(",") if x.strip()]
    print(f"load average before: {load_average()}", flush=True)
    runs: dict[int, list[Run]] = {}
    with bench_infra() as (db, nats_url):
        for n in range(args.runs):
            for replicas in counts:  # alternate the replica counts so a slow spell of the machine hits them all
                run = asyncio.run(one_run(args, replicas, db, nats_url))
                runs.setdefault(replicas, []).append(run)
                print(f"run {n + 1}:" + fmt_run(run), flush=True)
    print(f"load average after: {load_average()}", flush=True)
    summarize(args, runs)


if __name__ == "__main__":
    main()
