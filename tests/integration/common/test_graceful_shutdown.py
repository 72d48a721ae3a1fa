"""A real service process on SIGTERM: stops taking calls, finishes, flushes, exits 0 (what Kubernetes expects)."""

from __future__ import annotations

import signal
import time

import psutil

from tests.support.stack import ServiceStack


def test_sigterm_exits_cleanly_and_says_so(service_stack: ServiceStack) -> None:
    child = service_stack.start("catalog")
    assert child.popen is not None
    child.popen.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = child.popen.wait(timeout=30)
    assert code == 0
    assert time.monotonic() - started < 15
    log = child.log_file.read_text()
    assert "catalog shutting down" in log
    assert "catalog stopped" in log
    assert "Traceback" not in log


def test_worker_processes_die_with_a_killed_service(service_stack: ServiceStack) -> None:
    child = service_stack.start("catalog", PLEXSYNC_CATALOG_INGEST_WORKERS="1")
    assert child.popen is not None
    workers = psutil.Process(child.pid).children(recursive=True)
    assert workers, "the catalog runs an ingest worker process"
    child.popen.send_signal(signal.SIGKILL)
    child.popen.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
