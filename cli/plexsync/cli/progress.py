"""Live progress bars for scheduler jobs, fed by one SchedulerService.WatchJobs stream for all of them.

The stream is re-opened for the jobs still open if the scheduler restarts or hands over its lead, so a
long `sync --wait` survives a rolling update; what ends the wait is every job reaching an end state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
from plexsync.cli.client import Services, describe_error
from plexsync.cli.output import enum_label, err_console
from plexsync.v1 import common_pb2, scheduler_pb2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

TERMINAL = frozenset({common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED})
# Errors worth re-opening the watch for (a restart, a lead handover, a proxy cutting a long stream).
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED})
_MAX_RETRIES = 8


def status_label(job: common_pb2.Job) -> str:
    return enum_label(common_pb2.JobStatus.Name(job.status))


class _Bars:
    """One bar per job, updated from whatever WatchJobs says about it."""

    def __init__(self, progress: Progress, jobs: Sequence[common_pb2.Job]) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.names: dict[str, str] = {}
        for job in jobs:
            self.names[job.id] = job.library_name or job.library_id
            self.tasks[job.id] = progress.add_task(self.names[job.id], total=None, rate="", state=status_label(job))
            self.update(job)

    def update(self, job: common_pb2.Job, change: int = 0, rate: float = 0.0, phase: str = "") -> None:
        task = self.tasks.get(job.id)
        if task is None:
            return
        counts = job.counts
        state = phase or status_label(job)
        if change == scheduler_pb2.JOB_CHANGE_REQUEUED:
            state = "requeued (its scanner stopped; another takes it)"
        if counts.failed:
            state += f", {counts.failed} item errors"
        if job.status in TERMINAL:
            seen = counts.seen
            self.progress.update(
                task, description=f"{self.names[job.id]} ({status_label(job)})", completed=seen,
                total=max(seen, counts.total), state=state, rate="",
            )  # fmt: skip
            return
        if rate:
            self.progress.update(task, rate=f"{rate:.0f} items/s")
        self.progress.update(task, completed=counts.seen, total=counts.total or None, state=state)


def watch_jobs(svc: Services, jobs: Sequence[common_pb2.Job], *, show_progress: bool = True) -> list[common_pb2.Job]:
    """Follow every job until it ends; return the final Job messages in the same order."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>12}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[state]}"),
        console=err_console,
        disable=not show_progress,
        transient=False,
    )
    latest = {job.id: job for job in jobs}
    address = svc.endpoints.addresses["scheduler"]
    with progress:
        bars = _Bars(progress, jobs)
        retries = 0
        while open_ids := [job_id for job_id, job in latest.items() if job.status not in TERMINAL]:
            request = scheduler_pb2.WatchJobsRequest(job_ids=open_ids, include_progress=True)
            try:
                for reply in svc.scheduler.WatchJobs(request, metadata=svc.metadata):
                    retries = 0
                    if reply.job.id in latest:
                        latest[reply.job.id] = reply.job
                        bars.update(reply.job, reply.change, reply.items_per_second, reply.phase)
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE or retries >= _MAX_RETRIES:
                    raise describe_error("scheduler", address, exc) from None
                retries += 1
                progress.console.print(f"[yellow]lost the scheduler's job stream ({exc.code().name}); "
                                       "following again…[/yellow]")  # fmt: skip
                time.sleep(min(0.5 * 2**retries, 5.0))
                continue
            # The stream ends when every job has; anything still open here missed its last change.
            for job_id in open_ids:
                if latest[job_id].status not in TERMINAL:
                    job = svc.call("scheduler", svc.scheduler.GetJob, scheduler_pb2.GetJobRequest(job_id=job_id)).job
                    latest[job_id] = job
                    bars.update(job)
            if any(latest[job_id].status not in TERMINAL for job_id in open_ids):
                time.sleep(0.5)
    return [svc.call("scheduler", svc.scheduler.GetJob, scheduler_pb2.GetJobRequest(job_id=job.id)).job for job in jobs]
