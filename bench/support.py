"""What every benchmark measures the same way: a process's peak resident memory."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; `peak` is the maximum seen (bytes)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self.peak = self.proc.memory_info().rss
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
