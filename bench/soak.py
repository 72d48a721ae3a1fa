"""Soak: syncs in a loop for N minutes, each hit half-way by a random fault, each followed by a sync that must
converge (the catalog exactly Plex's library, nothing stuck, lost, doubled or wrongly missing).

    .venv/bin/python bench/soak.py --minutes 10             # every fault kind, seeded
    .venv/bin/python bench/soak.py --minutes 2 --faults scanner,postgres,plex-500 --seed 3

The stack is tests/faults/harness.py's: a private PostgreSQL (killable), NATS, fakeplex (~200 movies and a few
shows, 20 ms per request, local, remote and relay connections) and catalog, auth, scheduler and scanner as real
processes. NATS is private (the `nats` fault stops and restarts it) unless NATS_URL is set, PostgreSQL private
unless DATABASE_URL is set (then the `nats` or `postgres` fault is left out: that server is not ours to hurt). Each
round: a DEEP sync of every library, wait until the movies' scan is half-way, inject the fault, clear it (restart
the process, bring Plex back), then `converge`. The table: per fault kind how often it was injected and converged,
the longest recovery (fault cleared -> converged), the items lost, duplicated or wrongly missing over all rounds
(must be 0), and the most a service that was not restarted grew in memory past its baseline (RSS after its first
sync).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.support import load_average  # noqa: E402
from tests.faults.harness import DEEP, Cluster, PrivateNats, running_cluster  # noqa: E402

Fault = Callable[[Cluster, random.Random], Awaitable[None]]


def kill_and_restart(service: str) -> Fault:
    async def fault(cluster: Cluster, rng: random.Random) -> None:
        await cluster.kill(service)
        await cluster.restart(service)

    return fault


async def kill_postgres(cluster: Cluster, rng: random.Random) -> None:
    await cluster.kill_postgres()
    await cluster.restart_postgres()


async def nats_restarted(cluster: Cluster, rng: random.Random) -> None:
    await cluster.stop_nats()
    await asyncio.sleep(3)
    await cluster.start_nats()


def plex_rule(**rule: object) -> Fault:
    async def fault(cluster: Cluster, rng: random.Random) -> None:
        async with cluster.control() as ctl:
            await ctl.set_faults([{"path_prefix": "/library", **rule}], seed=rng.randrange(1 << 30))
            await asyncio.sleep(3)
            await ctl.clear_faults()

    return fault


def connections_down(*names: str) -> Fault:
    async def fault(cluster: Cluster, rng: random.Random) -> None:
        async with cluster.control() as ctl:
            try:
                for name in names:
                    await ctl.set_connection(name, "down")
                await asyncio.sleep(3)
            finally:
                for name in names:
                    await ctl.set_connection(name, "up")

    return fault


async def token_revoked(cluster: Cluster, rng: random.Random) -> None:
    from plexsync.v1 import auth_pb2

    token = cluster.fake["token"]
    async with cluster.control() as ctl:
        await ctl.revoke_token(token)
        try:
            await asyncio.sleep(2)
        finally:
            await ctl.add_token(token)
    await cluster.settled(60)
    await cluster.auth.DiscoverServers(auth_pb2.DiscoverServersRequest())  # a 401 waits for a login/discovery


FAULTS: dict[str, Fault] = {
    "scanner": kill_and_restart("scanner"),
    "catalog": kill_and_restart("catalog"),
    "auth": kill_and_restart("auth"),
    "scheduler": kill_and_restart("scheduler"),
    "postgres": kill_postgres,
    "nats": nats_restarted,
    "plex-slow": plex_rule(kind="latency", latency_ms=2000, times=3),
    "plex-500": plex_rule(kind="error", status=500, probability=0.2),
    "plex-503": plex_rule(kind="error", status=503, probability=0.2),
    "plex-429": plex_rule(kind="rate_limit", status=429, retry_after=1, probability=0.05),
    "plex-drop": plex_rule(kind="drop", probability=0.1),
    "plex-truncate": plex_rule(kind="truncate", probability=0.1),
    "plex-local-down": connections_down("local"),
    "plex-unreachable": connections_down("local", "remote", "relay"),
    "token-revoked": token_revoked,
}


@dataclass
class Tally:
    injected: int = 0
    converged: int = 0
    longest_recovery: float = 0.0
    lost: int = 0
    duplicated: int = 0
    wrongly_missing: int = 0
    memory_growth: int = 0  # MiB, the most any service not restarted grew past its baseline after a round
    failures: list[str] = field(default_factory=list)


async def soak(cluster: Cluster, kinds: list[str], minutes: float, rng: random.Random) -> dict[str, Tally]:
    tallies = {kind: Tally() for kind in kinds}
    try:
        await cluster.login()
        await cluster.converge()
        await rounds(cluster, tallies, minutes, rng)
    finally:
        await cluster.aclose()
    return tallies


async def rounds(cluster: Cluster, tallies: dict[str, Tally], minutes: float, rng: random.Random) -> None:
    kinds = list(tallies)
    deadline = time.monotonic() + minutes * 60
    round_no = 0
    while time.monotonic() < deadline:
        round_no += 1
        kind = rng.choice(kinds)
        tally = tallies[kind]
        tally.injected += 1
        try:
            await cluster.trigger(DEEP)
            await cluster.mid_scan()
            await FAULTS[kind](cluster, rng)
            cleared = time.monotonic()
            await cluster.converge()
            tally.converged += 1
            tally.longest_recovery = max(tally.longest_recovery, time.monotonic() - cleared)
            outcome = "converged"
        except Exception as exc:  # a round that does not converge is the finding: record it, go on
            tally.failures.append(f"{type(exc).__name__}: {exc}"[:300])
            outcome = f"NOT converged: {tally.failures[-1]}"
            traceback.print_exc()
        damage = await cluster.damage()
        tally.lost += len(damage.lost)
        tally.duplicated += len(damage.duplicated)
        tally.wrongly_missing += len(damage.wrongly_missing)
        tally.memory_growth = max(tally.memory_growth, *cluster.memory_growth().values(), 0)
        print(f"round {round_no}: {kind}: {outcome}", flush=True)


def table(tallies: dict[str, Tally]) -> str:
    rows = [
        "| fault | injected | converged | longest recovery (s) | lost | duplicated | wrongly missing "
        "| max RSS growth (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, t in tallies.items():
        if t.injected:
            rows.append(
                f"| {kind} | {t.injected} | {t.converged} | {t.longest_recovery:.1f} | {t.lost} | {t.duplicated} "
                f"| {t.wrongly_missing} | {t.memory_growth} |"
            )
    return "\n".join(rows)


@contextmanager
def nats_server(base: Path) -> Iterator[str | PrivateNats]:
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    nats = PrivateNats(base / "nats", base / "nats.log")
    nats.start()
    try:
        yield nats
    finally:
        if nats.pid:
            nats.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="how long to keep injecting faults")
    p.add_argument("--seed", type=int, default=1, help="seeds the choice of faults (and fakeplex's fault dice)")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}")
    args = p.parse_args()
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(FAULTS))
    if unknown:
        p.error(f"unknown fault kinds {unknown}; known: {', '.join(FAULTS)}")
    external_db = os.environ.get("DATABASE_URL") or None
    if external_db and "postgres" in kinds:
        kinds.remove("postgres")
        print("DATABASE_URL is set: not killing that PostgreSQL (fault 'postgres' left out)", flush=True)
    print(f"soak: {args.minutes} min, seed {args.seed}, faults {', '.join(kinds)}", flush=True)
    print(f"load average before: {load_average()}", flush=True)
    if os.environ.get("NATS_URL") and "nats" in kinds:
        kinds.remove("nats")
        print("NATS_URL is set: not stopping that NATS (fault 'nats' left out)", flush=True)
    with tempfile.TemporaryDirectory(prefix="plexsync-soak-") as tmp, nats_server(Path(tmp)) as nats:
        fakeplex_args = ("--remote-host", "127.0.0.2", "--relay-listen", "127.0.0.1:0")
        with running_cluster(Path(tmp), nats, fakeplex_args=fakeplex_args, database_server_url=external_db) as cluster:
            tallies = asyncio.run(soak(cluster, kinds, args.minutes, random.Random(args.seed)))
    print(f"load average after: {load_average()}", flush=True)
    print()
    print(table(tallies))
    failures = [(kind, f) for kind, t in tallies.items() for f in t.failures]
    for kind, failure in failures:
        print(f"- {kind}: {failure}")
    damaged = any(t.lost or t.duplicated or t.wrongly_missing for t in tallies.values())
    sys.exit(1 if failures or damaged else 0)


if __name__ == "__main__":
    main()
