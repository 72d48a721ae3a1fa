"""What every benchmark measures the same way: a process's peak resident memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator

import psutil


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; `peak` is the maximum seen (bytes), `peak_children`
    the maximum of the summed RSS of its child processes (worker pools) at one sample."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, children: list[psutil.Process]) -> None:
        self.peak = max(self.peak, self.proc.memory_info().rss)
        total = 0
        for child in children:
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        self.peak_children = max(self.peak_children, total)

    def _run(self) -> None:
        children: list[psutil.Process] = []
        listed = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - listed > 1.0:  # listing children scans /proc: once a second is enough
                    children, listed = self.proc.children(recursive=True), time.monotonic()
                self._sample(children)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._sample(self.proc.children(recursive=True))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def postgres_settings(url: str) -> str:
    """The server settings that decide bulk-write speed, as one line for a benchmark's header."""
    import psycopg

    names = ["server_version", "shared_buffers", "max_wal_size", "checkpoint_timeout", "synchronous_commit"]
    with psycopg.connect(url, autocommit=True) as conn:
        values = [conn.execute("SELECT current_setting(%s)", (n,)).fetchone() for n in names]
    return ", ".join(f"{n}={v[0]}" for n, v in zip(names, values, strict=True) if v is not None)


@contextlib.contextmanager
def bench_infra() -> Iterator[tuple[str, str]]:
    """(database server URL, NATS URL): DATABASE_URL / NATS_URL when both are set, else embedded PostgreSQL and NATS
    of this benchmark's own, stopped and deleted afterwards (their data: gigabytes after a full-size scan run)."""
    if os.environ.get("DATABASE_URL") and os.environ.get("NATS_URL"):
        yield os.environ["DATABASE_URL"], os.environ["NATS_URL"]
        return
    from plexsync.devstack import infra
    from plexsync.devstack.stack import Stack, StackState

    stack = Stack(infra.DEV_DIR / f"bench-{os.getpid()}")
    state = stack.ensure_infra(StackState())
    try:
        yield state.database_url, state.nats_url
    finally:
        stack.down()
        shutil.rmtree(stack.dir, ignore_errors=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
