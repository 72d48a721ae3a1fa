"""The scheduling domain: triggers, dispatch within limits, what scanners report, the schedule's tick.

Any replica triggers, dispatches and records scan events (the repository serializes queue changes); only
the leader ticks (what is due), re-enumerates servers, reconciles silent jobs and prunes history.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from plexsync.common.audit import NO_AUDIT, AuditRecorder, AuditSession
from plexsync.common.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PlexsyncError,
)
from plexsync.common.metrics import METRICS
from plexsync.scheduler import policy
from plexsync.scheduler.models import CANCELLED, FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED, JobRow, ScheduleRow
from plexsync.scheduler.ports import Catalog, JobQueue, Scanner, Servers
from plexsync.scheduler.repository import Enqueued, JobRepository, JobSpec, history_of, message_json, to_proto
from plexsync.scheduler.settings import SchedulerSettings
from plexsync.v1 import common_pb2, events_pb2, scheduler_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer("plexsync.scheduler")

REPLICA = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
MODES: dict[int, str] = {common_pb2.SCAN_MODE_INCREMENTAL: policy.INCREMENTAL, common_pb2.SCAN_MODE_DEEP: policy.DEEP}
MODE_OF: dict[str, common_pb2.ScanMode.ValueType] = {
    policy.INCREMENTAL: common_pb2.SCAN_MODE_INCREMENTAL,
    policy.DEEP: common_pb2.SCAN_MODE_DEEP,
}
SCHEDULE_PATHS = ("enabled", "refresh_interval", "deep_every", "deep_interval", "window")
CATALOG_PATHS = {"enabled": "sync_enabled", "refresh_interval": "refresh_interval"}
MIN_INTERVAL_SECONDS = 10
MAX_INTERVAL_SECONDS = 366 * 86400
# Words of the error a scanner's reaper gives a scan whose scanner died (scanner repository.REAPED_REASON): such a
# scan is no end of its job, which JetStream redelivers to another scanner (or gives up on: the max-deliveries
# advisory fails the job).
REAPED_MARK = "stopped before it ended"
# The identity whose triggers are its real-time watcher's fallback scans (JOB_TRIGGER_REALTIME).
REALTIME_CALLER = "scanner"


def parse_job_id(job_id: str, field: str = "job_id") -> uuid.UUID:
    if not job_id:
        raise InvalidArgumentError.single(field, "is required")
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise InvalidArgumentError.single(field, f"must be a job id (UUID), got {job_id[:64]!r}") from None


def current_traceparent() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def _label(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return "unspecified"


@dataclass
class Target:
    library_id: str = ""
    server_id: str = ""
    all: bool = False


class Scheduler:
    def __init__(
        self,
        *,
        settings: SchedulerSettings,
        repository: JobRepository,
        catalog: Catalog,
        scanner: Scanner,
        servers: Servers,
        queue: JobQueue,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        audit: AuditRecorder = NO_AUDIT,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.repo = repository
        self.catalog = catalog
        self.scanner = scanner
        self.servers = servers
        self.queue = queue
        self.clock = clock
        self.is_leader = False
        self.last_tick: datetime | None = None
        self.queue_depth = 0
        self.oldest_waiting_seconds = 0.0
        self._dispatching = asyncio.Lock()

    # ------------------------------------------------------------------ settings
    def cadence(self, library: common_pb2.Library, row: ScheduleRow | None) -> policy.Cadence:
        s = self.settings
        interval = library.refresh_interval.seconds or s.refresh_interval_seconds
        deep_every = row.deep_every if row is not None and row.deep_every is not None else s.deep_every
        deep_seconds = (
            row.deep_interval_seconds
            if row is not None and row.deep_interval_seconds is not None
            else s.deep_interval_seconds
        )
        window = None
        if row is not None and row.window_start:
            parsed = policy.parse_window(row.window_start, row.window_end, row.window_time_zone)
            window = parsed if isinstance(parsed, policy.Window) else None
        return policy.Cadence(
            interval=timedelta(seconds=interval),
            deep_every=deep_every,
            deep_interval=timedelta(seconds=deep_seconds) if deep_seconds else None,
            window=window,
            retry_base=timedelta(seconds=s.retry_seconds),
        )

    # ------------------------------------------------------------------ TriggerSync
    async def trigger(
        self, target: Target, mode: int, force: bool, caller: str, *, reason: str = ""
    ) -> tuple[list[common_pb2.Job], list[str]]:
        """One job per target library, and the ids of those this call created. A scanner asking is its real-time
        watcher making sure of changes it may have missed; its jobs say so."""
        if mode == common_pb2.SCAN_MODE_UNSPECIFIED:
            mode = common_pb2.SCAN_MODE_INCREMENTAL
        if mode not in MODES:
            raise InvalidArgumentError.single("mode", f"unknown scan mode {mode}; use INCREMENTAL or DEEP")
        libraries = await self._targets(target, force)
        who = caller or "anonymous"
        jobs: list[JobRow] = []
        created: list[str] = []
        t = self.clock()
        trigger = common_pb2.JOB_TRIGGER_REALTIME if caller == REALTIME_CALLER else common_pb2.JOB_TRIGGER_MANUAL
        why = reason or f"requested by {who}"
        specs = [
            JobSpec(
                library=library,
                mode=mode,
                force=force,
                trigger=trigger,
                triggered_by=who,
                reason=why + (" (forced)" if force else ""),
                due_time=t,
                traceparent=current_traceparent(),
            )
            for library in libraries
        ]

        async def audit_deep(session: AuditSession, results: list[Enqueued]) -> None:
            """A DEEP trigger is recorded in the transaction that creates (or raises) its jobs."""
            kind, ident = (
                ("library", target.library_id)
                if target.library_id
                else ("server", target.server_id)
                if target.server_id
                else ("all", "")
            )
            made = [str(e.job.id) for e in results if e.created]
            await self.audit.record(
                "sync.trigger_deep",
                kind,
                ident,
                after={"force": force, "libraries": [lib.id for lib in libraries], "created_jobs": made},
                session=session,
            )

        deep = mode == common_pb2.SCAN_MODE_DEEP
        for enqueued in await self.repo.enqueue_all(specs, in_transaction=audit_deep if deep else None):
            jobs.append(enqueued.job)
            if enqueued.created:
                created.append(str(enqueued.job.id))
        await self.dispatch()
        fresh = [await self.repo.get(j.id) for j in jobs]
        return [to_proto(j) for j in fresh if j is not None], created

    async def _targets(self, target: Target, force: bool) -> list[common_pb2.Library]:
        if target.library_id:
            library = await self.catalog.get_library(target.library_id)
            if library.removed:
                raise FailedPreconditionError(
                    f"library {library.name!r} ({library.id}) is gone from its server; nothing to scan"
                )
            if not library.sync_enabled and not force:
                raise FailedPreconditionError(
                    f"sync is off for library {library.name!r} ({library.id}); enable it or pass force"
                )
            return [library]
        if target.server_id:
            server_ids = [target.server_id]
        elif target.all:
            server_ids = await self.servers.server_ids()
        else:
            raise InvalidArgumentError.single("target", "say what to sync: library_id, server_id or all")
        for server_id in server_ids:
            try:
                await self.scanner.sync_server(server_id)
            except NotFoundError:
                raise
            except PlexsyncError as exc:
                # The libraries the catalog knows are still worth scanning; the scans will say what is wrong.
                log.warning("could not re-enumerate a server", extra={"server_id": server_id, "error": str(exc)})
        libraries: list[common_pb2.Library] = []
        for server_id in server_ids:
            libraries.extend(await self.catalog.list_libraries(server_id))
        return [lib for lib in libraries if not lib.removed and (lib.sync_enabled or force)]

    # ------------------------------------------------------------------ dispatch
    async def dispatch(self) -> None:
        """Hand pending jobs to the scanners while the limits allow."""
        async with self._dispatching:
            chosen = await self.repo.dispatch(
                max_running=self.settings.max_running, max_per_server=self.settings.max_running_per_server
            )
            for row in chosen:
                await self._publish(row)

    async def _publish(self, row: JobRow) -> None:
        job = to_proto(row)
        try:
            seq = await self.queue.publish_job(job, row.traceparent)
        except Exception as exc:
            # Stays QUEUED without a stream sequence; the leader's reconcile publishes it again.
            log.warning("could not hand a job to the scanners; will retry",
                        extra={"job_id": job.id, "error": type(exc).__name__})  # fmt: skip
            return
        await self.repo.set_stream_seq(row.id, seq)
        await self._event("queued", row)

    async def _event(self, kind: str, row: JobRow) -> None:
        try:
            await self.queue.job_event(kind, to_proto(row))
        except Exception as exc:
            log.warning("could not publish a job event", extra={"kind": kind, "error": type(exc).__name__})

    # ------------------------------------------------------------------ queries and cancel
    async def get_job(self, job_id: str) -> common_pb2.Job:
        row = await self.repo.get(parse_job_id(job_id))
        if row is None:
            raise NotFoundError("job", job_id, resource_type="plexsync.v1.Job")
        job = to_proto(row)
        if row.status == RUNNING and row.scan_id:
            try:
                scan = await self.scanner.get_scan(row.scan_id)
            except PlexsyncError:
                scan = None
            if scan is not None:
                job.counts.CopyFrom(scan.counts)
        return job

    async def cancel_job(self, job_id: str) -> common_pb2.Job:
        jid = parse_job_id(job_id)
        row, before = await self.repo.cancel(jid, "cancelled by request before it started")
        if row is None:
            raise NotFoundError("job", job_id, resource_type="plexsync.v1.Job")
        if before in (SUCCEEDED, FAILED, CANCELLED):
            raise FailedPreconditionError(
                f"job {job_id} has already ended ({_label(common_pb2.JobStatus, before, 'JOB_STATUS_')})"
            )
        if before == QUEUED and row.stream_seq is not None:
            try:
                await self.queue.remove_job(row.stream_seq)
            except Exception:
                log.info("queued job was already taken from the stream", extra={"job_id": job_id})
        if before in (QUEUED, RUNNING):
            await self.queue.request_cancel(job_id, "cancelled by request")
        if row.status == CANCELLED:
            await self._event("finished", row)
            await self.dispatch()
        return to_proto(row)

    # ------------------------------------------------------------------ what the scanners report
    async def on_scan_event(self, event: events_pb2.ScanEvent) -> None:
        kind = event.WhichOneof("payload")
        at = event.time.ToDatetime(UTC) if event.HasField("time") else self.clock()
        job_id = uuid.UUID(event.job_id) if _is_uuid(event.job_id) else None
        if kind == "started":
            await self._started(event, job_id, at)
            return
        if kind not in ("completed", "failed", "cancelled"):
            return
        payload = getattr(event, kind)
        if kind == "cancelled" and payload.requeued and job_id is not None:
            row = await self.repo.requeue(job_id, event.scan_id, f"requeued: {payload.reason}")
            if row is not None:
                await self._event("requeued", row)
            return
        if kind == "failed" and REAPED_MARK in payload.error and job_id is not None:
            # A reaper's `failed`: the scan died with its scanner; the job goes on with JetStream's redelivery.
            row = await self.repo.requeue(job_id, event.scan_id, f"requeued: {payload.error}")
            if row is not None:
                await self._event("requeued", row)
            return
        status = {"completed": SUCCEEDED, "failed": FAILED, "cancelled": CANCELLED}[kind]
        error = payload.error if kind == "failed" else (payload.reason if kind == "cancelled" else "")
        finished = await self.repo.finish(
            job_id=job_id, scan_id=event.scan_id, status=status, counts=message_json(payload.counts),
            stats=message_json(payload.stats), error=error, at=at,
        )  # fmt: skip
        if finished is not None:
            self._record_metrics(finished)
            await self._event("finished", finished)
        await self.dispatch()

    async def _started(self, event: events_pb2.ScanEvent, job_id: uuid.UUID | None, at: datetime) -> None:
        started = event.started
        if job_id is not None:
            row = await self.repo.started(
                job_id, scan_id=event.scan_id, replica=started.replica, attempt=max(started.attempt, 1), at=at
            )
            if row is not None:
                if row.attempt == max(started.attempt, 1) and row.start_time == at:
                    lag = (at - row.due_time).total_seconds()
                    METRICS.job_lag.record(max(lag, 0.0), {"plexsync.job.trigger": _trigger_label(row.trigger)})
                await self._event("started", row)
            return
        library = common_pb2.Library(
            id=event.library_id, server_id=event.server_id, name=started.library_name, kind=started.library_kind
        )
        spec = JobSpec(
            library=library, mode=event.mode, force=started.force, trigger=common_pb2.JOB_TRIGGER_DIRECT,
            triggered_by="scanner", reason="a direct ScanLibrary call", due_time=at, traceparent="",
        )  # fmt: skip
        adopted = await self.repo.adopt_direct(spec, scan_id=event.scan_id, replica=started.replica, at=at)
        if adopted is not None:
            await self._event("started", adopted)

    def _record_metrics(self, row: JobRow) -> None:
        if row.start_time is None or row.end_time is None:
            return
        METRICS.job_duration.record(
            (row.end_time - row.start_time).total_seconds(),
            {
                "plexsync.scan.mode": MODES.get(row.mode, "unspecified"),
                "plexsync.library.kind": _label(common_pb2.LibraryKind, row.library_kind, "LIBRARY_KIND_"),
                "plexsync.job.outcome": _label(common_pb2.JobStatus, row.status, "JOB_STATUS_"),
            },
        )

    async def on_delivery_exhausted(self, stream_seq: int, deliveries: int) -> None:
        """JetStream gave up on a job after max_deliver deliveries: every scanner that took it died or stopped."""
        row = await self.repo.by_seq(stream_seq)
        if row is None:
            return
        failed = await self.repo.fail_open(
            row.id,
            f"handed to scanners {deliveries} times and none finished it (each scanner stopped or died "
            "mid-scan); see the scanners' logs, then trigger the library again",
        )
        try:
            await self.queue.remove_job(stream_seq)
        except Exception:
            log.info("exhausted job message already gone", extra={"stream_seq": stream_seq})
        if failed is not None:
            await self._event("finished", failed)
            await self.dispatch()

    # ------------------------------------------------------------------ the leader's work
    async def tick(self) -> int:
        """Queue every library whose schedule makes it due now; returns how many jobs were created."""
        now = self.clock()
        libraries = [lib for lib in await self.catalog.list_libraries() if not lib.removed and lib.sync_enabled]
        rows = await self.repo.schedules()
        open_libraries = {job.library_id for job in await self.repo.open_jobs()}
        created = 0
        for library in libraries:
            if library.id in open_libraries:
                continue
            decision = policy.decide(self.cadence(library, rows.get(library.id)),
                                     history_of(rows.get(library.id), library), now)  # fmt: skip
            if not decision.due:
                continue
            with tracer.start_as_current_span(
                "schedule library",
                context=otel_context.Context(),
                attributes={"plexsync.library.id": library.id, "plexsync.scan.mode": decision.mode},
            ):
                spec = JobSpec(
                    library=library, mode=MODE_OF[decision.mode], force=False,
                    trigger=common_pb2.JOB_TRIGGER_SCHEDULED, triggered_by="scheduler", reason=decision.reason,
                    due_time=min(decision.next_run, now), traceparent=current_traceparent(),
                )  # fmt: skip
                if (await self.repo.enqueue(spec)).created:
                    created += 1
        self.last_tick = now
        if created:
            log.info("scheduled scans", extra={"jobs": created})
            await self.dispatch()
        return created

    async def sync_servers(self) -> None:
        """Re-enumerate every server's libraries, so a section added in Plex is scanned by schedule alone."""
        for server_id in await self.servers.server_ids():
            try:
                await self.scanner.sync_server(server_id)
            except PlexsyncError as exc:
                log.warning("could not re-enumerate a server", extra={"server_id": server_id, "error": str(exc)})

    async def reconcile(self) -> None:
        """Repair what lost messages leave behind: unpublished jobs, silent running jobs, repeated cancels."""
        now = self.clock()
        silent = timedelta(seconds=self.settings.silent_job_seconds)
        for row in await self.repo.open_jobs():
            if row.status == QUEUED and row.stream_seq is None and row.dispatch_time is not None:
                if now - row.dispatch_time > timedelta(seconds=2):
                    await self._publish(row)
            elif row.status == RUNNING:
                if row.cancel_requested:
                    await self.queue.request_cancel(str(row.id), "cancelled by request")
                if row.scan_id and now - row.update_time > silent:
                    await self._check_with_scanner(row)
        counts = await self.repo.status_counts()
        self.queue_depth = counts.get(PENDING, 0) + counts.get(QUEUED, 0)
        oldest = await self.repo.oldest_waiting()
        self.oldest_waiting_seconds = (now - oldest).total_seconds() if oldest is not None else 0.0
        await self.dispatch()

    async def _check_with_scanner(self, row: JobRow) -> None:
        try:
            scan = await self.scanner.get_scan(row.scan_id)
        except PlexsyncError:
            return
        if scan is None:
            return
        status = {common_pb2.SCAN_STATUS_COMPLETED: SUCCEEDED, common_pb2.SCAN_STATUS_FAILED: FAILED,
                  common_pb2.SCAN_STATUS_CANCELLED: CANCELLED}.get(scan.status)  # fmt: skip
        if status is None:
            await self.repo.touch(row.id, message_json(scan.counts))
            return
        if status == FAILED and REAPED_MARK in scan.error:
            # Its scanner died; JetStream hands the job to another (or gives up, which fails the job).
            requeued = await self.repo.requeue(row.id, row.scan_id, f"requeued: {scan.error}")
            if requeued is not None:
                await self._event("requeued", requeued)
            return
        at = scan.end_time.ToDatetime(UTC) if scan.HasField("end_time") else self.clock()
        finished = await self.repo.finish(
            job_id=row.id, scan_id=row.scan_id, status=status, counts=message_json(scan.counts),
            stats=message_json(scan.stats), error=scan.error, at=at,
        )  # fmt: skip
        if finished is not None:
            log.info("job ended without an event reaching the scheduler; found with GetScan",
                     extra={"job_id": str(row.id)})  # fmt: skip
            self._record_metrics(finished)
            await self._event("finished", finished)

    async def prune(self) -> int:
        before = self.clock() - timedelta(days=self.settings.retention_days)
        return await self.repo.prune(before)

    # ------------------------------------------------------------------ schedules
    async def schedule(self, library: common_pb2.Library, row: ScheduleRow | None = None) -> scheduler_pb2.Schedule:
        cadence = self.cadence(library, row)
        history = history_of(row, library)
        decision = policy.decide(cadence, history, self.clock())
        out = scheduler_pb2.Schedule(
            library_id=library.id, server_id=library.server_id, library_name=library.name,
            enabled=library.sync_enabled, deep_every=row.deep_every or 0 if row is not None else 0,
            effective_deep_every=cadence.deep_every, next_mode=MODE_OF[decision.mode],
            next_reason=decision.reason if library.sync_enabled else "sync is off for this library",
        )  # fmt: skip
        out.refresh_interval.CopyFrom(library.refresh_interval)
        out.effective_refresh_interval.FromTimedelta(cadence.interval)
        if row is not None and row.deep_interval_seconds is not None:
            out.deep_interval.FromSeconds(row.deep_interval_seconds)
        if cadence.deep_interval is not None:
            out.effective_deep_interval.FromTimedelta(cadence.deep_interval)
        if row is not None and row.window_start:
            out.window.start, out.window.end = row.window_start, row.window_end
            out.window.time_zone = row.window_time_zone
        for name, value in (
            ("last_run_time", row.last_run if row is not None else None),
            ("last_success_time", history.last_success),
            ("last_deep_time", history.last_deep),
        ):
            if value is not None:
                getattr(out, name).FromDatetime(value)  # fmt: skip
        if library.sync_enabled and not library.removed:
            out.next_run_time.FromDatetime(decision.next_run)
        return out

    async def get_schedule(self, library_id: str) -> scheduler_pb2.Schedule:
        if not library_id:
            raise InvalidArgumentError.single("library_id", "is required")
        library = await self.catalog.get_library(library_id)
        rows = await self.repo.schedules([library.id])
        return await self.schedule(library, rows.get(library.id))

    async def list_schedules(self, server_id: str) -> list[scheduler_pb2.Schedule]:
        libraries = [lib for lib in await self.catalog.list_libraries(server_id) if not lib.removed]
        rows = await self.repo.schedules([lib.id for lib in libraries])
        return [await self.schedule(lib, rows.get(lib.id)) for lib in libraries]

    async def update_schedule(self, schedule: scheduler_pb2.Schedule, paths: list[str]) -> scheduler_pb2.Schedule:
        if not schedule.library_id:
            raise InvalidArgumentError.single("schedule.library_id", "is required")
        if not paths:
            raise InvalidArgumentError.single("update_mask", "name the fields to change: " + ", ".join(SCHEDULE_PATHS))
        violations = [FieldViolation(f"update_mask.paths[{i}]", f"unknown or read-only field {p!r}; updatable: "
                                     + ", ".join(SCHEDULE_PATHS))
                      for i, p in enumerate(paths) if p not in SCHEDULE_PATHS]  # fmt: skip
        own: dict[str, Any] = {}
        if "refresh_interval" in paths:
            seconds = schedule.refresh_interval.seconds + schedule.refresh_interval.nanos / 1e9
            if seconds != 0 and not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
                violations.append(FieldViolation(
                    "schedule.refresh_interval",
                    f"must be 0 (the default) or between {MIN_INTERVAL_SECONDS} s and 366 days, got {seconds:g} s",
                ))  # fmt: skip
        if "deep_every" in paths:
            if not 0 <= schedule.deep_every <= 10_000:
                violations.append(FieldViolation("schedule.deep_every", "must be between 0 (the default) and 10000"))
            own["deep_every"] = schedule.deep_every or None
        if "deep_interval" in paths:
            seconds = schedule.deep_interval.seconds
            if seconds != 0 and not 60 <= seconds <= MAX_INTERVAL_SECONDS:
                violations.append(FieldViolation(
                    "schedule.deep_interval", f"must be 0 (the default) or between 60 s and 366 days, got {seconds} s"
                ))  # fmt: skip
            own["deep_interval_seconds"] = seconds or None
        if "window" in paths:
            w = schedule.window
            if not (w.start or w.end or w.time_zone):
                own.update(window_start="", window_end="", window_time_zone="")
            else:
                parsed = policy.parse_window(w.start, w.end, w.time_zone)
                if isinstance(parsed, list):
                    violations.extend(parsed)
                else:
                    own.update(window_start=f"{parsed.start:%H:%M}", window_end=f"{parsed.end:%H:%M}",
                               window_time_zone=parsed.zone_name)  # fmt: skip
        if violations:
            raise InvalidArgumentError(violations)
        library = await self.catalog.get_library(schedule.library_id)
        before = await self.schedule(library, (await self.repo.schedules([library.id])).get(library.id))
        catalog_paths = [CATALOG_PATHS[p] for p in paths if p in CATALOG_PATHS]
        if catalog_paths:
            change = common_pb2.Library(id=library.id, sync_enabled=schedule.enabled)
            change.refresh_interval.CopyFrom(schedule.refresh_interval)
            library = await self.catalog.update_library(change, catalog_paths)

        async def audit_update(session: AuditSession | None, row: ScheduleRow | None) -> None:
            after = await self.schedule(library, row)
            await self.audit.record(
                "schedule.update",
                "library",
                library.id,
                before=_schedule_audit(before, paths),
                after=_schedule_audit(after, paths),
                session=session,
            )

        if own:
            # The scheduler's own fields and their record commit together.
            row: ScheduleRow | None = await self.repo.update_schedule(library.id, own, in_transaction=audit_update)
        else:
            # Only catalog fields: that change was made (and recorded atomically, as library.update in the
            # catalog's log) by the catalog over gRPC; there is no scheduler transaction to join, so this record
            # gets one of its own.
            row = (await self.repo.schedules([library.id])).get(library.id)
            await audit_update(None, row)
        return await self.schedule(library, row)


def _schedule_audit(schedule: scheduler_pb2.Schedule, paths: list[str]) -> dict[str, Any]:
    """The fields an UpdateSchedule named, as the audit log keeps them."""
    fields = MessageToDict(schedule, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return {k: v for k, v in fields.items() if k in {"library_id", *paths}}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _trigger_label(trigger: int) -> str:
    return _label(common_pb2.JobTrigger, trigger, "JOB_TRIGGER_")
