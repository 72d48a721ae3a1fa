"""Live progress bars for running scans, fed by ScannerService.WatchScan (one stream per library)."""

from __future__ import annotations

import threading
from typing import Any

import grpc
from plexsync.cli.client import Services, describe_error
from plexsync.cli.output import err_console
from plexsync.v1 import scanner_pb2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

_TERMINAL = {"completed", "failed", "cancelled"}


def _describe(event: Any) -> tuple[str, Any]:
    kind = event.WhichOneof("payload") or ""
    return kind, getattr(event, kind) if kind else None


def watch_scans(svc: Services, scans: list[tuple[Any, Any]], *, show_progress: bool = True) -> list[Any]:
    """Follow every scan until it ends; return the final Scan messages in the same order."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} items/s"),
        TextColumn("errors {task.fields[errors]}"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not show_progress,
        transient=False,
    )
    errors: list[BaseException] = []

    def follow(task: TaskID, scan_id: str) -> None:
        request = scanner_pb2.WatchScanRequest(scan_id=scan_id)
        try:
            for reply in svc.scanner.WatchScan(request, metadata=svc.metadata):
                kind, payload = _describe(reply.event)
                counts = getattr(payload, "counts", None)
                if counts is not None:
                    progress.update(task, completed=counts.seen, total=counts.total or None, errors=counts.failed)
                if kind == "progress":
                    progress.update(task, rate=f"{payload.items_per_second:.0f}")
                if kind == "item_error":
                    progress.console.print(f"  [yellow]item {payload.rating_key}[/yellow]: {payload.message}")
                if kind in _TERMINAL:
                    progress.update(task, description=f"{progress.tasks[task].description} ({kind})")
                    return
        except grpc.RpcError as exc:
            errors.append(describe_error("scanner", svc.endpoints.addresses["scanner"], exc))

    threads = []
    with progress:
        for library, scan in scans:
            task = progress.add_task(library.name or library.id, total=None, rate="0", errors=0)
            thread = threading.Thread(target=follow, args=(task, scan.id), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return [svc.call("scanner", svc.scanner.GetScan, scanner_pb2.GetScanRequest(scan_id=scan.id)).scan
            for _, scan in scans]  # fmt: skip
