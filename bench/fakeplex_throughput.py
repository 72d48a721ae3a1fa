"""Measure fakeplex's listing throughput: is it fast enough to benchmark a scanner against?

Starts fakeplex as a real process (plexsync.devstack) with its threads pinned to CPU 0, then from this process
(pinned elsewhere when possible) drives concurrent keep-alive httpx clients at listing pages for
``--seconds`` per run, ``--runs`` times, and prints requests, seconds and the median req/s.
Target: >= 2,000 req/s.

Also reported: fakeplex's own CPU use while driven, and its capacity (req/s per fully busy core).
On small machines httpx itself (~2 ms of client CPU per request) is the bottleneck; ``--client aiohttp``
drives the same pages with a cheaper client to show what fakeplex sustains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from plexsync.devstack.process import ChildProcess, start_fakeplex

TOKEN = "bench-token"


def start_pinned_fakeplex(movies: int, log_dir: Path) -> tuple[ChildProcess, str]:
    """fakeplex as a real process (plexsync.devstack) on core 0, this process on the others; (child, URL).

    The child inherits this process's CPU affinity when it is spawned, so every thread it ever starts
    stays on core 0."""
    args = ["--port", "0", "--token", TOKEN, "--movies", str(movies), "--shows", "20", "--seasons", "3",
            "--episodes", "10"]  # fmt: skip
    cores = os.cpu_count() or 1
    pin = hasattr(os, "sched_setaffinity") and cores > 1
    if pin:
        os.sched_setaffinity(0, {0})
    try:
        child, info = start_fakeplex(args, log_dir / "fakeplex.log")
    finally:
        if pin:
            os.sched_setaffinity(0, set(range(1, cores)))
    return child, str(info["url"])


async def drive_aiohttp(url: str, paths: list[str], seconds: float, concurrency: int, accept: str) -> tuple[int, float]:
    headers = {"X-Plex-Token": TOKEN, "Accept": accept}
    connector = aiohttp.TCPConnector(limit=concurrency)
    count = 0
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:
        for p in paths:
            async with session.get(p) as r:
                r.raise_for_status()
                await r.read()
        t0 = time.perf_counter()
        stop = t0 + seconds

        async def worker(offset: int) -> None:
            nonlocal count
            i = offset
            while time.perf_counter() < stop:
                async with session.get(paths[i % len(paths)]) as r:
                    r.raise_for_status()
                    await r.read()
                count += 1
                i += 1

        await asyncio.gather(*(worker(i * 7) for i in range(concurrency)))
        return count, time.perf_counter() - t0


async def drive(url: str, paths: list[str], seconds: float, concurrency: int, accept: str) -> tuple[int, float]:
    """Each worker owns one keep-alive connection and walks the page list until time is up."""
    headers = {"X-Plex-Token": TOKEN, "Accept": accept}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    count = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        for p in paths[:concurrency]:  # warm the connections and fakeplex's page cache
            (await client.get(p)).raise_for_status()
        for p in paths:
            (await client.get(p)).raise_for_status()
        t0 = time.perf_counter()
        stop = t0 + seconds

        async def worker(offset: int) -> None:
            nonlocal count
            i = offset
            while time.perf_counter() < stop:
                r = await client.get(paths[i % len(paths)])
                r.raise_for_status()
                count += 1
                i += 1

        await asyncio.gather(*(worker(i * 7) for i in range(concurrency)))
        return count, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--movies", type=int, default=5000)
    ap.add_argument("--page-size", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--client", choices=("httpx", "aiohttp"), default="httpx")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        child, url = start_pinned_fakeplex(args.movies, Path(tmp))
        try:
            size = args.page_size
            pages = [
                f"/library/sections/1/all?X-Plex-Container-Start={s}&X-Plex-Container-Size={size}"
                for s in range(0, args.movies, size)
            ]
            rows: list[dict[str, Any]] = []
            server = psutil.Process(child.pid)
            driver = drive if args.client == "httpx" else drive_aiohttp
            for label, accept in (("json", "application/json"), ("xml", "text/xml")):
                rates, reqs, secs, cpu = [], 0, 0.0, 0.0
                for _ in range(args.runs):
                    c0 = sum(server.cpu_times()[:2])
                    n, dt = asyncio.run(driver(url, pages, args.seconds, args.concurrency, accept))
                    cpu += sum(server.cpu_times()[:2]) - c0
                    rates.append(n / dt)
                    reqs += n
                    secs += dt
                busy = cpu / secs if secs else 0.0
                rows.append(
                    {
                        "endpoint": f"GET /library/sections/1/all (size={size}, {label}, {args.client})",
                        "requests": reqs,
                        "seconds": round(secs, 2),
                        "req_per_s_median": round(statistics.median(rates)),
                        "runs": [round(r) for r in rates],
                        "server_cpu": round(busy, 2),
                        "capacity_per_core": round(reqs / cpu) if cpu else None,
                    }
                )
        finally:
            child.stop(timeout=10)
    width = max(len(r["endpoint"]) for r in rows)
    print(
        f"{'endpoint':<{width}}  {'requests':>9}  {'seconds':>8}  {'req/s (median)':>14}  "
        f"{'server CPU':>10}  {'req/s per core':>14}  runs"
    )
    for r in rows:
        print(
            f"{r['endpoint']:<{width}}  {r['requests']:>9}  {r['seconds']:>8}  {r['req_per_s_median']:>14}  "
            f"{r['server_cpu']:>10}  {r['capacity_per_core']!s:>14}  {r['runs']}"
        )
    pinned = "pinned to CPU 0" if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1 else "not pinned"
    print(f"target >= 2000 req/s; fakeplex {pinned}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
