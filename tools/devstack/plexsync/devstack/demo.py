"""`make demo`: the whole product on one machine, end to end, in under two minutes.

Starts the stack with a demo library in fakeplex, logs in through the PIN flow (fakeplex approves it),
discovers the server, maps Plex paths to a local folder where some files exist, syncs every library
with live progress, prints a summary, changes a few items in fakeplex and shows that an incremental sync
fetches only those, then that the scheduler scans a library on its own. Everything the demo does goes
through the `plexsync` command a user would type.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plexsync.devstack import infra
from plexsync.devstack.stack import SERVICES, Stack, StackState
from rich.console import Console
from rich.table import Table

console = Console()
DEMO_SIZES = {"movies": 1200, "shows": 24, "seasons": 3, "episodes": 10, "other_videos": 150}
SEED = 7
# One in LOCAL_EVERY files exists on "local disk"; the shows library streams the rest from Plex.
LOCAL_EVERY = 3
DEMO_SCHEDULER_ENV = {"PLEXSYNC_SCHEDULER_TICK_SECONDS": "1", "PLEXSYNC_SCHEDULER_RECONCILE_SECONDS": "2"}
SCHEDULED_WAIT_SECONDS = 90
REALTIME_WAIT_SECONDS = 15


def fakeplex_args(sizes: dict[str, int]) -> list[str]:
    return [
        "--movies", str(sizes["movies"]), "--shows", str(sizes["shows"]), "--seasons", str(sizes["seasons"]),
        "--episodes", str(sizes["episodes"]), "--other-videos", str(sizes["other_videos"]), "--seed", str(SEED),
        "--pin-auto-approve-after", "2", "--friendly-name", "Demo Plex",
    ]  # fmt: skip


def expected_library(sizes: dict[str, int]) -> tuple[dict[str, int], list[str]]:
    """What fakeplex serves, counted by kind, and the Plex paths of every file."""
    from plexsync.fakeplex.library import Library, LibrarySpec

    spec = LibrarySpec.from_sizes(seed=SEED, **sizes)
    counts: dict[str, int] = {}
    files: list[str] = []
    for item in Library(spec).items():
        kind = str(item.get("type"))
        counts[kind] = counts.get(kind, 0) + 1
        files.extend(
            part["file"] for media in item.get("Media", []) for part in media.get("Part", []) if "file" in part
        )
    return counts, files


def make_local_media(root: Path, files: list[str]) -> int:
    """Create every LOCAL_EVERY-th file under root (as Plex path /data/... maps to root/...)."""
    shutil.rmtree(root, ignore_errors=True)
    made = 0
    for index, plex_path in enumerate(sorted(files)):
        if index % LOCAL_EVERY:
            continue
        local = root / plex_path.removeprefix("/data/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.touch()
        made += 1
    return made


class Cli:
    """Runs `plexsync ...` as a user would, showing the command."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}

    def run(self, *args: str, show: bool = True) -> str:
        if show:
            console.print(f"[bold cyan]$ plexsync {' '.join(args)}[/bold cyan]")
        result = subprocess.run(
            [sys.executable, "-m", "plexsync.cli", *args], env=self.env, text=True,
            stdout=None if show else subprocess.PIPE, stderr=None if show else subprocess.PIPE,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"`plexsync {' '.join(args)}` failed (exit {result.returncode}): {result.stderr or ''}")
        return result.stdout or ""

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json", show=False))


def summary(cli: Cli, seconds: float, title: str) -> dict[str, Any]:
    stats = cli.json("stats")
    libraries = cli.json("libraries", "list")
    table = Table(title=f"{title} ({seconds:.1f}s)", title_justify="left")
    for column in ("library", "kind", "items"):
        table.add_column(column)
    for library in libraries:
        lib_stats = cli.json("stats", "--library", library["id"])
        table.add_row(library["name"], library.get("kind", "").removeprefix("LIBRARY_KIND_").lower(),
                      str(lib_stats.get("total", 0)))  # fmt: skip
    console.print(table)
    by_state = Table(title="Items by kind and state", title_justify="left")
    for column in ("kind", "state", "count"):
        by_state.add_column(column)
    for row in stats.get("counts", []):
        by_state.add_row(row["kind"].removeprefix("ITEM_KIND_").lower(),
                         row["state"].removeprefix("ITEM_STATE_").lower(), str(row.get("count", 0)))  # fmt: skip
    console.print(by_state)
    return dict(stats)


def matches_fakeplex(stats: dict[str, Any], expected: dict[str, int]) -> bool:
    """Compare the catalog's counts by kind with what fakeplex serves, and say so."""
    found: dict[str, int] = {}
    for row in stats.get("counts", []):
        kind = row["kind"].removeprefix("ITEM_KIND_").lower()
        kind = "movie" if kind == "other_video" else kind  # Plex serves other videos as movies
        found[kind] = found.get(kind, 0) + int(row.get("count", 0))
    found["collection"] = int(stats.get("collections", 0))
    if found == expected:
        console.print(f"[green]The catalog matches fakeplex:[/green] {found}")
        return True
    console.print(f"[red]The catalog does not match fakeplex:[/red] catalog {found}, fakeplex {expected}")
    return False


async def change_some_items(fakeplex_url: str) -> int:
    """Edit, re-version and delete a few items in fakeplex, as a Plex user would."""
    from plexsync.fakeplex.control import FakePlexControl

    async with FakePlexControl(fakeplex_url) as control:
        await control.change(1, title="The Demo Cut")
        await control.change(2, summary="A new plot, written for the demo.")
        await control.add_media(3)
        await control.delete(4)
    return 4


async def reset_plex_stats(fakeplex_url: str) -> None:
    from plexsync.fakeplex.control import FakePlexControl

    async with FakePlexControl(fakeplex_url) as control:
        await control.reset_stats()


def watcher_connected(cli: Cli, server_id: str) -> bool:
    """Wait until a scanner holds the server's notification stream: changes made before it connects reach the
    catalog only through a scan."""
    deadline = time.monotonic() + REALTIME_WAIT_SECONDS * 2
    while time.monotonic() < deadline:
        watchers = cli.json("servers", "watch-status", "--server", server_id)
        if any(w.get("state") == "WATCHER_STATE_CONNECTED" for w in watchers):
            return True
        time.sleep(0.2)
    console.print(f"[red]No scanner connected to the server's notifications within {REALTIME_WAIT_SECONDS * 2}s[/red]")
    return False


def follows_in_real_time(cli: Cli, changed_at: float) -> bool:
    """Wait for the watcher to bring fakeplex's changes into the catalog, with no scan, and show its state."""
    deadline = changed_at + REALTIME_WAIT_SECONDS
    while time.monotonic() < deadline:
        renamed = cli.json("items", "search", "The Demo Cut")
        gone = cli.json("items", "list", "--state", "file_not_found", "--limit", "5")
        if renamed and gone:
            console.print(f"The catalog followed in real time, {time.monotonic() - changed_at:.1f}s after the "
                          "changes, from Plex's notifications (no scan ran):")  # fmt: skip
            cli.run("servers", "watch-status")
            return True
        time.sleep(0.2)
    console.print(f"[red]The catalog did not follow the changes within {REALTIME_WAIT_SECONDS}s[/red]")
    return False


def started_at(job: dict[str, Any]) -> datetime:
    """A job's start time from its JSON form (RFC 3339, up to nanoseconds); unset is the distant past."""
    text = str(job.get("start_time", ""))
    if not text:
        return datetime.min.replace(tzinfo=UTC)
    head, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}+00:00")


async def retitle(fakeplex_url: str, rating_key: int, title: str) -> None:
    from plexsync.fakeplex.control import FakePlexControl

    async with FakePlexControl(fakeplex_url) as control:
        await control.change(rating_key, title=title)


def scheduled_scan(cli: Cli, fakeplex_url: str, library: dict[str, Any]) -> bool:
    """Nobody types `sync`: a short schedule on one library, a change in Plex, and the scheduler scans on its own."""
    console.rule("The scheduler keeps the catalog current on its own")
    before = {j["id"] for j in cli.json("jobs", "list", "--library", library["id"], "--limit", "100")}
    cli.run("schedule", "set", library["id"], "--interval", "20s")
    title = "Changed While Nobody Was Looking"
    asyncio.run(retitle(fakeplex_url, 5, title))
    changed_at = datetime.now(UTC)
    console.print(f"Retitled an item in fakeplex to {title!r}; waiting for the scheduled scan (interval 20 s)…")
    deadline = time.monotonic() + SCHEDULED_WAIT_SECONDS
    while time.monotonic() < deadline:
        jobs = cli.json("jobs", "list", "--library", library["id"], "--status", "succeeded")
        # A job that started before the change could not see it; the next one will.
        scheduled = [j for j in jobs if j.get("trigger") == "JOB_TRIGGER_SCHEDULED" and j["id"] not in before
                     and started_at(j) >= changed_at]  # fmt: skip
        if scheduled:
            cli.run("jobs", "show", scheduled[0]["id"])
            cli.run("schedule", "show", library["id"])
            found = cli.json("items", "search", title)
            if any(r.get("item", {}).get("title") == title for r in found):
                console.print("[green]The scheduled scan brought the change into the catalog.[/green]")
                cli.run("schedule", "set", library["id"], "--interval", "default")
                return True
            console.print(f"[red]The scheduled scan ran but the catalog has no item titled {title!r}[/red]")
            return False
        time.sleep(1)
    console.print(f"[red]No scheduled scan of {library['name']} within {SCHEDULED_WAIT_SECONDS} s[/red]")
    return False


async def plex_requests(fakeplex_url: str) -> dict[str, int]:
    from plexsync.fakeplex.control import FakePlexControl

    async with FakePlexControl(fakeplex_url) as control:
        return await control.stats()


def run(keep: bool, sizes: dict[str, int]) -> int:
    started = time.monotonic()
    # The demo has a stack of its own, started from empty every time, so it never mixes with `make up`.
    demo_dir = infra.DEV_DIR / "demo"
    Stack(demo_dir).down()
    shutil.rmtree(demo_dir, ignore_errors=True)
    stack = Stack(demo_dir)
    console.rule("[bold]plexsync demo")
    console.print("Starting PostgreSQL, NATS, fakeplex (a Plex server with a demo library) and the services…")
    # The scheduler starts once paths and remote streaming are set: it scans never-scanned libraries at its
    # first tick, and a scan before the settings would make the incremental sync refetch every changed state.
    state: StackState = stack.up(fakeplex_args=fakeplex_args(sizes), services=[s for s in SERVICES if s != "scheduler"])
    try:
        counts, files = expected_library(sizes)
        media_root = infra.DEV_DIR / "demo-media"
        made = make_local_media(media_root, files)
        console.print(f"fakeplex serves {sum(counts.values())} items {counts}; {made} of {len(files)} files "
                      f"exist locally under {media_root}")  # fmt: skip
        console.print("gRPC between the services: plain TCP, no TLS (PLEXSYNC_GRPC_INSECURE=true, a demo on one host)")
        cli = Cli(state.service_env("cli"))
        cli.run("login", "--timeout", "60")
        servers = cli.json("servers", "list")
        server_id = servers[0]["id"]
        cli.run("servers", "sync", server_id)
        cli.run("paths", "set", server_id, f"/data={media_root}")
        for library in cli.json("libraries", "list"):
            if library.get("kind") == "LIBRARY_KIND_SHOWS":
                cli.run("libraries", "remote-streaming", library["id"], "on")
        # It looks for due libraries every second, so the demo's 20-second schedule shows at once.
        console.print("Starting the scheduler…")
        state = stack.up(extra_env=DEMO_SCHEDULER_ENV)
        cli = Cli(state.service_env("cli"))
        sync_started = time.monotonic()
        cli.run("sync", "--server", server_id, "--wait")
        stats = summary(cli, time.monotonic() - sync_started, "After the first sync")
        if not matches_fakeplex(stats, counts):
            return 1

        if not watcher_connected(cli, server_id):
            return 1
        changed = asyncio.run(change_some_items(state.fakeplex_url))
        console.print(f"\nChanged {changed} items in fakeplex (edit, edit, new version, delete).")
        if not follows_in_real_time(cli, time.monotonic()):
            return 1
        asyncio.run(reset_plex_stats(state.fakeplex_url))
        console.print("An incremental sync now (the schedule's safety net) confirms what the watcher wrote:")
        sync_started = time.monotonic()
        cli.run("sync", "--server", server_id, "--wait")
        requests = asyncio.run(plex_requests(state.fakeplex_url))
        metadata = sum(n for path, n in requests.items() if path == "GET /library/metadata/{ids}")
        console.print(f"The incremental sync took {time.monotonic() - sync_started:.1f}s and made "
                      f"{sum(requests.values())} Plex requests; only {metadata} fetched full metadata "
                      "(the items the watcher wrote); the rest were listings.")  # fmt: skip
        movies = next(lib for lib in cli.json("libraries", "list") if lib.get("kind") == "LIBRARY_KIND_MOVIES")
        if not scheduled_scan(cli, state.fakeplex_url, movies):
            return 1
        console.rule("Explore")
        console.print(f'  eval "$(.venv/bin/python -m plexsync.devstack --dir {demo_dir} env)"   # with KEEP=1')
        console.print("  .venv/bin/plexsync items search 'orchard'")
        console.print("  .venv/bin/plexsync items list --state unavailable --limit 10")
        console.print("  .venv/bin/plexsync jobs list")
        console.print("  .venv/bin/plexsync schedule list")
        console.print(f"Demo finished in {time.monotonic() - started:.0f}s.")
    except Exception as exc:
        console.print(f"[red]demo failed:[/red] {exc}\nlogs: {stack.log_dir}")
        keep = False
        return 1
    finally:
        if keep:
            console.print(
                f"The stack keeps running; stop it with `.venv/bin/python -m plexsync.devstack --dir {demo_dir} down`."
            )
        else:
            stack.down()
            console.print("Stopped everything the demo started (run `make demo KEEP=1` to keep it running).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--movies", type=int, default=DEMO_SIZES["movies"])
    args = parser.parse_args(argv)
    sizes = {**DEMO_SIZES, "movies": args.movies}
    return run(args.keep, sizes)


if __name__ == "__main__":
    raise SystemExit(main())
