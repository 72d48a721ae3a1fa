"""Thin gRPC servicer for SchedulerService: validate, call the Scheduler, return."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypeAlias

from plexsync.common.access import Role, current_caller
from plexsync.common.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from plexsync.common.eventbus import EventBus
from plexsync.common.interceptors import caller_identity
from plexsync.common.pagination import decode_token, encode_token, filters_fingerprint, page_size
from plexsync.scheduler.models import PENDING, QUEUED, RUNNING, TERMINAL
from plexsync.scheduler.queue import ChangeFeed
from plexsync.scheduler.repository import to_proto
from plexsync.scheduler.service import REPLICA, Scheduler, Target, parse_job_id
from plexsync.v1 import common_pb2, events_pb2, scheduler_pb2, scheduler_pb2_grpc

Context: TypeAlias = Any
CHANGES: dict[str, scheduler_pb2.JobChange.ValueType] = {
    "queued": scheduler_pb2.JOB_CHANGE_QUEUED,
    "started": scheduler_pb2.JOB_CHANGE_STARTED,
    "finished": scheduler_pb2.JOB_CHANGE_FINISHED,
    "requeued": scheduler_pb2.JOB_CHANGE_REQUEUED,
}
MAX_WATCHED_JOBS = 1000


MAX_REASON_LENGTH = 500


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self) -> None:
        self._scheduler: Scheduler | None = None
        self._bus: EventBus | None = None

    def attach(self, scheduler: Scheduler, bus: EventBus) -> None:
        self._scheduler, self._bus = scheduler, bus

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise UnavailableError("the scheduler is starting; try again shortly")
        return self._scheduler

    async def TriggerSync(
        self, request: scheduler_pb2.TriggerSyncRequest, context: Context
    ) -> scheduler_pb2.TriggerSyncResponse:
        which = request.WhichOneof("target")
        if which is None or (which == "all" and not request.all):
            raise InvalidArgumentError.single("target", "say what to sync: library_id, server_id or all")
        if which in ("library_id", "server_id") and not getattr(request, which):
            raise InvalidArgumentError.single(which, "must not be empty")
        if len(request.reason) > MAX_REASON_LENGTH:
            raise InvalidArgumentError.single("reason", f"must be at most {MAX_REASON_LENGTH} characters")
        caller = current_caller()
        if request.mode == common_pb2.SCAN_MODE_DEEP and caller is not None and Role.ADMIN not in caller.roles:
            raise PermissionDeniedError(
                f"role {caller.role_label!r} (caller {caller.identity!r}) may not trigger a DEEP sync; "
                "only role 'admin' may"
            )
        target = Target(library_id=request.library_id, server_id=request.server_id, all=request.all)
        jobs, created = await self.scheduler.trigger(
            target, request.mode, request.force, caller_identity.get(), reason=request.reason
        )
        return scheduler_pb2.TriggerSyncResponse(jobs=jobs, created_job_ids=created)

    async def GetJob(self, request: scheduler_pb2.GetJobRequest, context: Context) -> scheduler_pb2.GetJobResponse:
        return scheduler_pb2.GetJobResponse(job=await self.scheduler.get_job(request.job_id))

    async def ListJobs(
        self, request: scheduler_pb2.ListJobsRequest, context: Context
    ) -> scheduler_pb2.ListJobsResponse:
        size = page_size(request.page_size)
        if request.status and request.status not in common_pb2.JobStatus.values():
            raise InvalidArgumentError.single("status", f"unknown job status {request.status}")
        fingerprint = filters_fingerprint("jobs", request.library_id, request.server_id, request.status)
        last = decode_token(request.page_token, fingerprint)
        after = None
        if last is not None:
            try:
                after = (datetime.fromisoformat(str(last[0])), uuid.UUID(str(last[1])))
            except (ValueError, IndexError) as exc:
                raise InvalidArgumentError.single("page_token", "is not a token returned by ListJobs") from exc
        rows = await self.scheduler.repo.list_jobs(
            library_id=request.library_id, server_id=request.server_id, status=request.status, limit=size + 1,
            after=after,
        )  # fmt: skip
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_token([rows[-1].create_time.isoformat(), str(rows[-1].id)], fingerprint)
        return scheduler_pb2.ListJobsResponse(jobs=[to_proto(r) for r in rows], next_page_token=token)

    async def CancelJob(
        self, request: scheduler_pb2.CancelJobRequest, context: Context
    ) -> scheduler_pb2.CancelJobResponse:
        return scheduler_pb2.CancelJobResponse(job=await self.scheduler.cancel_job(request.job_id))

    async def WatchJobs(
        self, request: scheduler_pb2.WatchJobsRequest, context: Context
    ) -> AsyncIterator[scheduler_pb2.WatchJobsResponse]:
        if len(request.job_ids) > MAX_WATCHED_JOBS:
            raise InvalidArgumentError.single("job_ids", f"at most {MAX_WATCHED_JOBS} jobs per watch")
        wanted = {str(parse_job_id(j, f"job_ids[{i}]")) for i, j in enumerate(request.job_ids)}
        if self._bus is None:
            raise UnavailableError("the scheduler is starting; try again shortly")

        def selected(job: common_pb2.Job) -> bool:
            if wanted:
                return job.id in wanted
            if request.library_id and job.library_id != request.library_id:
                return False
            return not (request.server_id and job.server_id != request.server_id)

        # Subscribe before the snapshot, so nothing that happens in between is missed.
        feed = ChangeFeed(self._bus, include_progress=request.include_progress)
        await feed.start()
        latest: dict[str, common_pb2.Job] = {}
        try:
            if wanted:
                snapshot = [await self.scheduler.get_job(j) for j in sorted(wanted)]
            else:
                snapshot = [
                    job for job in (to_proto(r) for r in await self.scheduler.repo.open_jobs()) if selected(job)
                ]
            open_ids = set()
            for job in snapshot:
                latest[job.id] = job
                if job.status not in TERMINAL:
                    open_ids.add(job.id)
                yield scheduler_pb2.WatchJobsResponse(change=scheduler_pb2.JOB_CHANGE_SNAPSHOT, job=job)
            if wanted and not open_ids:
                return
            while True:
                kind, payload = await feed.next()
                if isinstance(payload, events_pb2.JobEvent):
                    job = payload.job
                    if not selected(job):
                        continue
                    latest[job.id] = job
                    yield scheduler_pb2.WatchJobsResponse(
                        change=CHANGES.get(kind, scheduler_pb2.JOB_CHANGE_UNSPECIFIED), job=job
                    )
                    if job.status in TERMINAL:
                        open_ids.discard(job.id)
                        if wanted and not open_ids:
                            return
                    else:
                        open_ids.add(job.id)
                    continue
                known = latest.get(payload.job_id) if payload.job_id else None
                if known is None or known.status in TERMINAL:
                    continue
                live = common_pb2.Job()
                live.CopyFrom(known)
                live.counts.CopyFrom(payload.progress.counts)
                yield scheduler_pb2.WatchJobsResponse(
                    change=scheduler_pb2.JOB_CHANGE_PROGRESS, job=live,
                    items_per_second=payload.progress.items_per_second, phase=payload.progress.phase,
                )  # fmt: skip
        finally:
            await feed.close()

    async def GetSchedule(
        self, request: scheduler_pb2.GetScheduleRequest, context: Context
    ) -> scheduler_pb2.GetScheduleResponse:
        return scheduler_pb2.GetScheduleResponse(schedule=await self.scheduler.get_schedule(request.library_id))

    async def ListSchedules(
        self, request: scheduler_pb2.ListSchedulesRequest, context: Context
    ) -> scheduler_pb2.ListSchedulesResponse:
        size = page_size(request.page_size)
        fingerprint = filters_fingerprint("schedules", request.server_id)
        last = decode_token(request.page_token, fingerprint)
        schedules = sorted(await self.scheduler.list_schedules(request.server_id), key=lambda s: s.library_id)
        if last is not None:
            schedules = [s for s in schedules if s.library_id > str(last[0])]
        token = ""
        if len(schedules) > size:
            schedules = schedules[:size]
            token = encode_token([schedules[-1].library_id], fingerprint)
        return scheduler_pb2.ListSchedulesResponse(schedules=schedules, next_page_token=token)

    async def UpdateSchedule(
        self, request: scheduler_pb2.UpdateScheduleRequest, context: Context
    ) -> scheduler_pb2.UpdateScheduleResponse:
        schedule = await self.scheduler.update_schedule(request.schedule, list(request.update_mask.paths))
        return scheduler_pb2.UpdateScheduleResponse(schedule=schedule)

    async def GetSchedulerStatus(
        self, request: scheduler_pb2.GetSchedulerStatusRequest, context: Context
    ) -> scheduler_pb2.GetSchedulerStatusResponse:
        s = self.scheduler
        counts = await s.repo.status_counts()
        leader = await s.repo.leader()
        out = scheduler_pb2.GetSchedulerStatusResponse(
            is_leader=s.is_leader, replica=REPLICA, max_running=s.settings.max_running,
            max_running_per_server=s.settings.max_running_per_server, pending=counts.get(PENDING, 0),
            queued=counts.get(QUEUED, 0), running=counts.get(RUNNING, 0),
        )  # fmt: skip
        if leader is not None:
            out.leader = leader.replica
            out.leader_since.FromDatetime(leader.since)
            if leader.last_tick is not None:
                out.last_tick_time.FromDatetime(leader.last_tick)
        out.tick_interval.FromMilliseconds(int(s.settings.tick_seconds * 1000))
        out.default_refresh_interval.FromSeconds(s.settings.refresh_interval_seconds)
        out.server_sync_interval.FromMilliseconds(int(s.settings.server_sync_seconds * 1000))
        return out
