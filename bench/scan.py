"""Scanner benchmark: full, incremental (nothing changed) and incremental (1% changed) scans against fakeplex,
with fakeplex, catalog, auth and scanner as real processes, versus a plexapi baseline.

    .venv/bin/python bench/scan.py                        # 20,000 movies + 200 shows x 5 seasons x 10 episodes
    .venv/bin/python bench/scan.py --movies 2000 --shows 20 --sizes 2   # smaller, plus a 2x size for RSS growth

PostgreSQL and NATS are embedded (plexsync.devstack) unless DATABASE_URL / NATS_URL are set. For each job it
prints seconds, items/s, Plex requests made (fakeplex counters) and the scanner's peak RSS (psutil), then the
same library read the way a Python user would with plexapi (``PlexServer(url, token)``, ``section.all()``,
``item.reload()`` per item, an INSERT per item) and the ratio. The nothing-changed scan runs
``--incremental-runs`` times (median quoted). Before each job the benchmark waits until PostgreSQL runs no
autovacuum worker: the VACUUM ANALYZE set off by the previous job's writes otherwise takes a core during the
next job's first seconds, which in production falls between scans hours apart.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plexsync.common.db import libpq_url  # noqa: E402
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
)

from bench.support import PeakRss, bench_infra, load_average  # noqa: E402
from tests.integration.scanner.support import fakeplex_process, watch  # noqa: E402
from tests.support.stack import ServiceStack, fresh_database  # noqa: E402


@dataclass
class Result:
    job: str
    seconds: float
    items: int
    requests: int
    peak_rss_mb: float
    cpu: dict[str, float] | None = None
    phases: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def _group(proc: psutil.Process) -> str | None:
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    for name in ("scanner", "catalog", "fakeplex", "auth", "scheduler"):
        if f"plexsync.{name}" in cmd:
            return name
    if "multiprocessing" in cmd:  # a worker process: the catalog's ingest worker or the scanner's listing worker
        try:
            parent = proc.parent()
        except psutil.Error:
            return None
        return _group(parent) if parent is not None else None
    if cmd.startswith("postgres") or "/postgres " in cmd:
        return "postgres"
    return None


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of this benchmark's processes: pid -> (service or PostgreSQL, seconds)."""
    out: dict[int, tuple[str, float]] = {}
    procs = psutil.Process().children(recursive=True)
    marker = f"bench-{os.getpid()}"
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            procs += [proc, *proc.children(recursive=True)]
    for proc in {p.pid: p for p in procs}.values():
        group = _group(proc)
        if group is None:
            continue
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = (group, t.user + t.system)
    return out


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by service between two snapshots (per process, so processes that came or went, such as
    PostgreSQL's autovacuum workers, do not distort the sums; time of those that ended in between is lost)."""
    out: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        out[group] = out.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    return dict(sorted(out.items()))


def quiesce(database_url: str, timeout: float = 120.0) -> float:
    """Wait until PostgreSQL runs no autovacuum worker (the VACUUM ANALYZE that a big write sets off takes a
    core for seconds) so each job is timed on its own, as it would run hours after the previous one in
    production. Returns the seconds waited."""
    t0 = time.perf_counter()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        while time.perf_counter() - t0 < timeout:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.2)
    return time.perf_counter() - t0


def scan_phases(log: Path, scan_ids: set[str]) -> dict[str, float]:
    """The scanner's "scan phases" log lines of these scans (INFO level), summed over the libraries."""
    out: dict[str, float] = {}
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        if "scan phases" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("scan_id") not in scan_ids:
            continue
        for k, v in record.items():
            if k.endswith("_seconds"):
                out[k.removesuffix("_seconds")] = out.get(k.removesuffix("_seconds"), 0.0) + float(v)
    return out


async def scan_all(
    scanner: Any,
    channel: Any,
    libs: list[str],
    ctl: FakePlexControl,
    pid: int,
    job: str,
    log: Path,
    database_url: str,
    mode: common_pb2.ScanMode.ValueType = common_pb2.SCAN_MODE_INCREMENTAL,
) -> Result:
    await asyncio.to_thread(quiesce, database_url)
    await ctl.reset_stats()
    scan_ids: set[str] = set()
    items = 0
    cpu0 = cpu_snapshot()
    t0 = time.perf_counter()
    with PeakRss(pid) as rss:
        for lib in libs:
            started = await scanner.ScanLibrary(scanner_pb2.ScanLibraryRequest(library_id=lib, mode=mode))
            scan_ids.add(started.scan.id)
            events = await watch(channel, started.scan.id, 3600)
            last = events[-1]
            if last.WhichOneof("payload") != "completed":
                raise RuntimeError(f"scan {started.scan.id} ended with {last}")
            items += last.completed.counts.seen
    seconds = time.perf_counter() - t0
    cpu = cpu_used(cpu0, cpu_snapshot())
    await asyncio.sleep(0.2)  # let the scanner's log catch up
    phases = scan_phases(log, scan_ids)
    return Result(job, seconds, items, await ctl.total_requests(), rss.peak / 1e6, cpu, phases)


def plexapi_baseline(url: str, token: str, database_url: str) -> Result:
    """What a Python user writes with plexapi: every item reloaded one by one, inserted into a table."""
    from plexapi.library import Library
    from plexapi.server import PlexServer

    t0 = time.perf_counter()
    items = 0
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS plexapi_items")
        conn.execute(
            "CREATE TABLE plexapi_items (rating_key text primary key, type text, title text, summary text,"
            " year int, file text, actors text)"
        )

        def insert(item: Any) -> None:
            nonlocal items
            item.reload()
            file = ""
            for media in getattr(item, "media", []) or []:
                for part in media.parts:
                    file = part.file
            actors = ",".join(r.tag for r in getattr(item, "roles", []) or [])
            conn.execute(
                "INSERT INTO plexapi_items VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (rating_key) DO UPDATE"
                " SET title = excluded.title",
                (str(item.ratingKey), item.type, item.title, item.summary, getattr(item, "year", None), file, actors),
            )
            items += 1

        plex = PlexServer(url, token)  # type: ignore[no-untyped-call]
        # fakeplex does not serve the bare /library root plexapi's `plex.library` fetches first; build the
        # same Library object from /library/sections (what `library.sections()` then asks for anyway).
        library = Library(plex, plex.query("/library/sections"))  # type: ignore[no-untyped-call]
        for section in library.sections():  # type: ignore[no-untyped-call]
            for item in section.all():
                insert(item)
                if item.type == "show":
                    for season in item.seasons():
                        insert(season)
                        for episode in season.episodes():
                            insert(episode)
    return Result("plexapi full", time.perf_counter() - t0, items, 0, psutil.Process().memory_info().rss / 1e6)


async def run_size(
    args: argparse.Namespace, movies: int, shows: int, database_server: str, nats_url: str
) -> list[Result]:
    out: list[Result] = []
    with fresh_database(database_server) as database_url:
        log_dir = Path(tempfile.mkdtemp(prefix="bench-scan-", dir=infra.DEV_DIR))
        print(f"logs: {log_dir}", flush=True)
        fp_args = ["--movies", str(movies), "--shows", str(shows), "--seasons", str(args.seasons),
                   "--episodes", str(args.episodes), "--other-videos", "0"]  # fmt: skip
        with fakeplex_process(log_dir, *fp_args) as fake:
            stack = ServiceStack(database_url=database_url, nats_url=nats_url, log_dir=log_dir)
            stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "bench:" + base64.b64encode(secrets.token_bytes(32)).decode()
            stack.extra_env["PLEXSYNC_LOG_LEVEL"] = "WARNING"
            try:
                for name in ("catalog", "auth", "scanner"):
                    stack.reserve(name)
                stack.start("catalog")
                stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
                env = {
                    "PLEXSYNC_SCAN_CONCURRENCY": str(args.concurrency),
                    "PLEXSYNC_SCAN_PAGE_SIZE": str(args.page_size),
                    "PLEXSYNC_SCAN_BATCH_SIZE": str(args.batch_size),
                    "PLEXSYNC_SCAN_METADATA_BATCH": str(args.metadata_batch),
                }
                scanner_proc = stack.start("scanner", **env, PLEXSYNC_LOG_LEVEL="INFO")
                auth_ch, scan_ch = stack.channel("auth"), stack.channel("scanner")
                auth = auth_pb2_grpc.AuthServiceStub(auth_ch)
                scanner = scanner_pb2_grpc.ScannerServiceStub(scan_ch)
                server = await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"]))
                synced = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server.server.id))
                libs = [lib.id for lib in synced.libraries]
                async with FakePlexControl(fake["url"], timeout=120) as ctl:
                    counts = (await ctl.info())["counts"]
                    label = (
                        f"{movies} movies + {counts['show']} shows/{counts['season']} seasons/{counts['episode']} eps"
                    )
                    pid = scanner_proc.pid
                    log = log_dir / "scanner.log"
                    r = await scan_all(scanner, scan_ch, libs, ctl, pid, f"{label}: full", log, database_url)
                    out.append(r)
                    print(fmt(r), flush=True)
                    runs = []
                    for n in range(args.incremental_runs):
                        job = f"{label}: incremental, nothing changed (run {n + 1})"
                        runs.append(await scan_all(scanner, scan_ch, libs, ctl, pid, job, log, database_url))
                        print(fmt(runs[-1]), flush=True)
                    print(
                        f"scanner peak RSS over {len(runs)} nothing-changed scans: "
                        + " -> ".join(f"{r.peak_rss_mb:.0f}" for r in runs)
                        + " MB (flat: nothing a scan built outlives it)",
                        flush=True,
                    )
                    median = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
                    median.job = f"{label}: incremental, nothing changed (median of {len(runs)})"
                    out.append(median)
                    # 1% changed: titles of 1% of the movies and 1% of the episodes
                    movie_keys = await _keys(fake, "1", 1)
                    episode_keys = await _keys(fake, "2", 4)
                    changed = movie_keys[::100] + episode_keys[::100]
                    sem = asyncio.Semaphore(16)

                    async def change(rk: str) -> None:
                        async with sem:
                            await ctl.change(rk, title=f"Changed {rk}")

                    await asyncio.gather(*(change(rk) for rk in changed))
                    r = await scan_all(
                        scanner, scan_ch, libs, ctl, pid, f"{label}: incremental, 1% changed", log, database_url
                    )
                    out.append(r)
                    print(fmt(r), flush=True)
                    # sync rules: a deep scan of the movies without a rule, then with one that excludes half of them
                    movie_lib = next(lib.id for lib in synced.libraries if lib.kind == common_pb2.LIBRARY_KIND_MOVIES)
                    catalog_ch = stack.channel("catalog")
                    catalog = catalog_pb2_grpc.CatalogServiceStub(catalog_ch)
                    years = sorted(y for y in await _years(fake) if y)
                    rule = f"year >= {years[len(years) // 2]}"
                    deep = common_pb2.SCAN_MODE_DEEP
                    for expression in ("", rule):
                        await catalog.SetLibraryRules(
                            catalog_pb2.SetLibraryRulesRequest(library_id=movie_lib, expression=expression)
                        )
                        what = f"rule {expression!r}" if expression else "no rule"
                        job = f"{movies} movies: deep, {what}"
                        r = await scan_all(scanner, scan_ch, [movie_lib], ctl, pid, job, log, database_url, deep)
                        out.append(r)
                        print(fmt(r), flush=True)
                    await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=movie_lib))
                    await catalog_ch.close()
                    if not args.skip_baseline:
                        await ctl.reset_stats()
                        base = await asyncio.to_thread(plexapi_baseline, fake["url"], fake["token"], database_url)
                        base.requests = await ctl.total_requests()
                        base.job = f"{label}: plexapi baseline, full"
                        out.append(base)
                        print(fmt(base), flush=True)
                await auth_ch.close()
                await scan_ch.close()
            finally:
                stack.stop_all()
    return out


async def _keys(fake: dict[str, Any], section: str, type_num: int) -> list[str]:
    import httpx

    async with httpx.AsyncClient(base_url=fake["url"], timeout=120) as client:
        resp = await client.get(
            f"/library/sections/{section}/all",
            params={"type": str(type_num)},
            headers={"X-Plex-Token": fake["token"], "Accept": "application/json"},
        )
        return [m["ratingKey"] for m in resp.json()["MediaContainer"].get("Metadata", [])]


async def _years(fake: dict[str, Any]) -> list[int]:
    import httpx

    async with httpx.AsyncClient(base_url=fake["url"], timeout=120) as client:
        resp = await client.get(
            "/library/sections/1/all",
            params={"type": "1"},
            headers={"X-Plex-Token": fake["token"], "Accept": "application/json"},
        )
        return [int(m.get("year") or 0) for m in resp.json()["MediaContainer"].get("Metadata", [])]


def fmt(r: Result) -> str:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in (r.cpu or {}).items())
    phases = ", ".join(f"{k} {v:.1f}" for k, v in (r.phases or {}).items())
    return f"| {r.job} | {r.seconds:.1f} | {r.rate:,.0f} | {r.requests:,} | {r.peak_rss_mb:.0f} | {cpu} | {phases} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--movies", type=int, default=20_000)
    p.add_argument("--shows", type=int, default=200)
    p.add_argument("--seasons", type=int, default=5)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--sizes", type=int, default=1, help="also run at 2x, 3x... the size (RSS growth check)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--page-size", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--metadata-batch", type=int, default=50)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--incremental-runs", type=int, default=3, help="nothing-changed scans (median quoted)")
    args = p.parse_args()
    results: list[Result] = []
    print(f"load average before: {load_average()}", flush=True)
    print(
        "| job | seconds | items/s | Plex requests | scanner peak RSS (MB) | CPU seconds by process "
        "| scanner phases (s) |\n"
        "|---|---:|---:|---:|---:|---|---|",
        flush=True,
    )
    with bench_infra() as (db, nats_url):
        for n in range(1, args.sizes + 1):
            results += asyncio.run(run_size(args, args.movies * n, args.shows * n, db, nats_url))
    print(f"load average after: {load_average()}", flush=True)
    summarize(results)


def summarize(results: list[Result]) -> None:
    def find(pred: Callable[[Result], bool]) -> list[Result]:
        return [r for r in results if pred(r)]

    print()
    for full in find(lambda r: r.job.endswith(": full")):
        label = full.job.rsplit(":", 1)[0]
        nothing = find(lambda r, lb=label: r.job.startswith(f"{lb}: incremental, nothing changed (median"))  # type: ignore[misc]
        base = find(lambda r, lb=label: r.job == f"{lb}: plexapi baseline, full")  # type: ignore[misc]
        if nothing:
            pct = 100 * nothing[0].seconds / full.seconds
            print(f"{label}: incremental (nothing changed, median) = {pct:.1f}% of full (target < 10%)")
        if base:
            print(f"{label}: full scan is {base[0].seconds / full.seconds:.1f}x faster than the plexapi baseline")
    peaks = [r.peak_rss_mb for r in find(lambda r: "plexapi" not in r.job)]
    if peaks:
        print(f"scanner peak RSS: {max(peaks):.0f} MB")


if __name__ == "__main__":
    main()
