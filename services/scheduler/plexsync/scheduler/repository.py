"""Job history and schedules in the scheduler's schema.

Every change of a job's queue state (enqueue, dispatch, cancel) runs under one transaction-level advisory
lock, so replicas that trigger and dispatch at once never exceed a limit or queue a library twice; the
partial unique indexes (one QUEUED-or-RUNNING and one PENDING job per library) hold even without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf.json_format import MessageToDict, ParseDict
from plexsync.scheduler.models import (
    ACTIVE,
    CANCELLED,
    FAILED,
    OPEN,
    PENDING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    JobRow,
    LeaderRow,
    ScheduleRow,
)
from plexsync.scheduler.policy import History
from plexsync.v1 import common_pb2
from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

DISPATCH_LOCK = "plexsync.scheduler.dispatch"
DEEP = common_pb2.SCAN_MODE_DEEP
# Jobs someone (or the real-time watcher) is waiting for go before scheduled ones.
URGENT_TRIGGERS = (common_pb2.JOB_TRIGGER_MANUAL, common_pb2.JOB_TRIGGER_REALTIME)


def now() -> datetime:
    return datetime.now(UTC)


def message_json(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def to_proto(row: JobRow) -> common_pb2.Job:
    job = common_pb2.Job(
        id=str(row.id),
        library_id=row.library_id,
        server_id=row.server_id,
        mode=cast(common_pb2.ScanMode.ValueType, row.mode),
        force=row.force,
        status=cast(common_pb2.JobStatus.ValueType, row.status),
        trigger=cast(common_pb2.JobTrigger.ValueType, row.trigger),
        scan_id=row.scan_id,
        attempt=row.attempt,
        error=row.error,
        counts=ParseDict(row.counts or {}, common_pb2.ScanCounts(), ignore_unknown_fields=True),
        triggered_by=row.triggered_by,
        reason=row.reason,
        replica=row.replica,
        stats=ParseDict(row.stats or {}, common_pb2.ScanStats(), ignore_unknown_fields=True),
        library_name=row.library_name,
        library_kind=cast(common_pb2.LibraryKind.ValueType, row.library_kind),
        trace_id=trace_id_of(row.traceparent),
        cancel_requested=row.cancel_requested,
    )
    for name, value in (("create_time", row.create_time), ("due_time", row.due_time),
                        ("dispatch_time", row.dispatch_time), ("start_time", row.start_time),
                        ("end_time", row.end_time)):  # fmt: skip
        if value is not None:
            getattr(job, name).FromDatetime(value)
    return job


def trace_id_of(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


@dataclass(frozen=True)
class JobSpec:
    """What a new job is for, as TriggerSync or the schedule asks for it."""

    library: common_pb2.Library
    mode: int
    force: bool
    trigger: int
    triggered_by: str
    reason: str
    due_time: datetime
    traceparent: str = ""


@dataclass(frozen=True)
class Enqueued:
    job: JobRow
    created: bool


# Called with the session and the outcome just before the transaction commits: what is written on the session there
# (an audit record of the change) commits or rolls back with it.
InTransaction = Callable[[AsyncSession, Any], Awaitable[None]]


class JobRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @staticmethod
    async def _lock(session: AsyncSession) -> None:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": DISPATCH_LOCK})

    # ------------------------------------------------------------------ queue state
    async def enqueue(self, spec: JobSpec) -> Enqueued:
        """A PENDING job for the library, or the open job that already serves the request.

        A request for a library with a pending job returns it (raising its mode to DEEP if asked); one with a
        queued or running job returns that, unless `force`, which queues exactly one follow-up behind it.
        """
        async with self._sessions.begin() as session:
            await self._lock(session)
            return await self._enqueue(session, spec)

    async def enqueue_all(
        self, specs: Sequence[JobSpec], *, in_transaction: InTransaction | None = None
    ) -> list[Enqueued]:
        """`enqueue` for each spec, all in one transaction; `in_transaction(session, results)` runs just before it
        commits (the caller's audit record of the request commits with the jobs, or neither does)."""
        async with self._sessions.begin() as session:
            await self._lock(session)
            results = [await self._enqueue(session, spec) for spec in specs]
            if in_transaction is not None:
                await session.flush()
                await in_transaction(session, results)
            return results

    async def _enqueue(self, session: AsyncSession, spec: JobSpec) -> Enqueued:
        lib = spec.library
        rows = (await session.execute(
            select(JobRow).where(JobRow.library_id == lib.id, JobRow.status.in_(OPEN)).with_for_update()
        )).scalars().all()  # fmt: skip
        pending = next((r for r in rows if r.status == PENDING), None)
        active = next((r for r in rows if r.status in ACTIVE), None)
        if pending is not None:
            if spec.mode == DEEP and pending.mode != DEEP:
                pending.mode = DEEP
                pending.reason += "; raised to deep by a later request"
                pending.update_time = now()
            pending.force = pending.force or spec.force
            return Enqueued(pending, False)
        reason = spec.reason
        if active is not None:
            if not spec.force:
                return Enqueued(active, False)
            reason = f"{reason}; follow-up of job {active.id} (forced)"
        t = now()
        row = JobRow(
            id=uuid.uuid4(), library_id=lib.id, server_id=lib.server_id, library_name=lib.name,
            library_kind=int(lib.kind), mode=spec.mode, force=spec.force, status=PENDING, trigger=spec.trigger,
            triggered_by=spec.triggered_by, reason=reason, attempt=0, scan_id="", replica="", error="",
            counts={}, stats={}, cancel_requested=False, traceparent=spec.traceparent, stream_seq=None,
            create_time=t, due_time=spec.due_time, update_time=t,
        )  # fmt: skip
        session.add(row)
        return Enqueued(row, True)

    async def dispatch(self, *, max_running: int, max_per_server: int) -> list[JobRow]:
        """Move PENDING jobs to QUEUED while the limits allow, oldest first (manual before scheduled)."""
        async with self._sessions.begin() as session:
            await self._lock(session)
            active = (await session.execute(
                select(JobRow.server_id, JobRow.library_id).where(JobRow.status.in_(ACTIVE))
            )).all()  # fmt: skip
            per_server: dict[str, int] = {}
            busy_libraries = set()
            for server_id, library_id in active:
                per_server[server_id] = per_server.get(server_id, 0) + 1
                busy_libraries.add(library_id)
            total = len(active)
            if total >= max_running:
                return []
            candidates = (await session.execute(
                select(JobRow).where(JobRow.status == PENDING)
                .order_by(JobRow.trigger.in_(URGENT_TRIGGERS).desc(), JobRow.create_time)
                .limit(500).with_for_update()
            )).scalars().all()  # fmt: skip
            chosen: list[JobRow] = []
            t = now()
            for job in candidates:
                if total >= max_running:
                    break
                if job.library_id in busy_libraries or per_server.get(job.server_id, 0) >= max_per_server:
                    continue
                job.status = QUEUED
                job.dispatch_time = t
                job.update_time = t
                busy_libraries.add(job.library_id)
                per_server[job.server_id] = per_server.get(job.server_id, 0) + 1
                total += 1
                chosen.append(job)
            return chosen

    async def set_stream_seq(self, job_id: uuid.UUID, seq: int) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(JobRow).where(JobRow.id == job_id).values(stream_seq=seq))

    async def cancel(self, job_id: uuid.UUID, reason: str) -> tuple[JobRow | None, int]:
        """Cancel a job; returns it and the status it had. A running job is only marked cancel_requested."""
        async with self._sessions.begin() as session:
            await self._lock(session)
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                return None, 0
            before = row.status
            t = now()
            if row.status in (PENDING, QUEUED):
                row.status, row.error, row.end_time = CANCELLED, reason, t
            if row.status == RUNNING:
                row.cancel_requested = True
            if row.status not in TERMINAL or before != row.status:
                row.update_time = t
            return row, before

    # ------------------------------------------------------------------ what scanners report
    async def started(
        self, job_id: uuid.UUID, *, scan_id: str, replica: str, attempt: int, at: datetime
    ) -> JobRow | None:
        """A scanner started the job's scan (any attempt); None when the job has ended or is unknown."""
        async with self._sessions.begin() as session:
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status in TERMINAL:
                return None
            row.status, row.scan_id, row.replica = RUNNING, scan_id, replica
            row.attempt = max(row.attempt, attempt)
            row.start_time = row.start_time or at
            row.update_time = now()
            return row

    async def adopt_direct(self, spec: JobSpec, *, scan_id: str, replica: str, at: datetime) -> JobRow | None:
        """Record a scan started by a direct ScanLibrary call as a RUNNING job, so limits and history see it."""
        lib = spec.library
        t = now()
        try:
            async with self._sessions.begin() as session:
                if (await session.execute(select(JobRow.id).where(JobRow.scan_id == scan_id))).first():
                    return None
                row = JobRow(
                    id=uuid.uuid4(), library_id=lib.id, server_id=lib.server_id, library_name=lib.name,
                    library_kind=int(lib.kind), mode=spec.mode, force=spec.force, status=RUNNING,
                    trigger=common_pb2.JOB_TRIGGER_DIRECT, triggered_by=spec.triggered_by, reason=spec.reason,
                    attempt=1, scan_id=scan_id, replica=replica, error="", counts={}, stats={},
                    cancel_requested=False, traceparent=spec.traceparent, stream_seq=None, create_time=at,
                    due_time=at, dispatch_time=at, start_time=at, update_time=t,
                )  # fmt: skip
                session.add(row)
            return row
        except IntegrityError:
            return None  # the library already has an active job: the scanner's own lock decides

    async def touch(self, job_id: uuid.UUID, counts: dict[str, Any]) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING).values(counts=counts,
                                                                                          update_time=now())
            )  # fmt: skip

    async def finish(
        self,
        *,
        job_id: uuid.UUID | None,
        scan_id: str,
        status: int,
        counts: dict[str, Any],
        stats: dict[str, Any],
        error: str,
        at: datetime,
    ) -> JobRow | None:
        """The job's scan ended; record it and the library's schedule history. None if stale or already ended."""
        async with self._sessions.begin() as session:
            if job_id is not None:
                row = await session.get(JobRow, job_id, with_for_update=True)
            else:
                row = (await session.execute(
                    select(JobRow).where(JobRow.scan_id == scan_id).with_for_update()
                )).scalars().first()  # fmt: skip
            if row is None or row.status in TERMINAL:
                return None
            if row.scan_id and scan_id and row.scan_id != scan_id:
                return None  # an older attempt's scan; the job's current attempt decides
            t = now()
            if status == CANCELLED and row.cancel_requested:
                error = error or "cancelled by request"
            row.status, row.counts, row.stats, row.error = status, counts, stats, error
            row.scan_id = scan_id or row.scan_id
            row.end_time, row.update_time = at, t
            await self._record_history(session, row)
            return row

    async def requeue(self, job_id: uuid.UUID, scan_id: str, why: str) -> JobRow | None:
        """The job's scanner stopped without finishing it; the work queue hands it to another."""
        async with self._sessions.begin() as session:
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != RUNNING or (scan_id and row.scan_id != scan_id):
                return None
            row.status, row.error, row.update_time = QUEUED, why, now()
            return row

    async def fail_open(self, job_id: uuid.UUID, error: str) -> JobRow | None:
        """Fail a queued or running job that no scanner will finish (e.g. JetStream gave up delivering it)."""
        async with self._sessions.begin() as session:
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status in TERMINAL:
                return None
            t = now()
            row.status, row.error, row.end_time, row.update_time = FAILED, error, t, t
            await self._record_history(session, row)
            return row

    async def _record_history(self, session: AsyncSession, row: JobRow) -> None:
        """Keep the library's schedule history (what the policy reads) in step with its finished jobs."""
        if row.trigger == common_pb2.JOB_TRIGGER_UNSPECIFIED:
            return
        started = row.start_time or row.create_time
        values: dict[str, Any] = {"library_id": row.library_id, "last_run": started, "update_time": now()}
        updates: dict[str, Any] = {"last_run": started, "update_time": now()}
        if row.status == SUCCEEDED:
            deep = row.mode == DEEP
            values.update(last_success=started, consecutive_failures=0,
                          incrementals_since_deep=0 if deep else 1, last_deep=started if deep else None)  # fmt: skip
            updates.update(last_success=started, consecutive_failures=0)
            if deep:
                updates.update(last_deep=started, incrementals_since_deep=0)
            else:
                updates["incrementals_since_deep"] = ScheduleRow.incrementals_since_deep + 1
        elif row.status == FAILED:
            values.update(consecutive_failures=1, last_failure=row.end_time)
            updates.update(consecutive_failures=ScheduleRow.consecutive_failures + 1, last_failure=row.end_time)
        else:
            return
        stmt = insert(ScheduleRow).values(**values)
        await session.execute(stmt.on_conflict_do_update(index_elements=[ScheduleRow.library_id], set_=updates))

    # ------------------------------------------------------------------ reads
    async def get(self, job_id: uuid.UUID) -> JobRow | None:
        async with self._sessions() as session:
            return await session.get(JobRow, job_id)

    async def by_seq(self, seq: int) -> JobRow | None:
        async with self._sessions() as session:
            return (await session.execute(select(JobRow).where(JobRow.stream_seq == seq))).scalars().first()

    async def list_jobs(
        self, *, library_id: str, server_id: str, status: int, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[JobRow]:
        """Newest first; keyset pagination on (create_time, id)."""
        query = select(JobRow)
        if library_id:
            query = query.where(JobRow.library_id == library_id)
        if server_id:
            query = query.where(JobRow.server_id == server_id)
        if status:
            query = query.where(JobRow.status == status)
        if after is not None:
            t, i = after
            query = query.where(or_(JobRow.create_time < t, and_(JobRow.create_time == t, JobRow.id < i)))
        query = query.order_by(JobRow.create_time.desc(), JobRow.id.desc()).limit(limit)
        async with self._sessions() as session:
            return list((await session.execute(query)).scalars())

    async def open_jobs(self) -> list[JobRow]:
        async with self._sessions() as session:
            return list((await session.execute(select(JobRow).where(JobRow.status.in_(OPEN)))).scalars())

    async def status_counts(self) -> dict[int, int]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(JobRow.status, func.count()).where(JobRow.status.in_(OPEN)).group_by(JobRow.status)
            )
            return {int(status): int(count) for status, count in rows.all()}

    async def oldest_waiting(self) -> datetime | None:
        async with self._sessions() as session:
            oldest: datetime | None = (await session.execute(
                select(func.min(JobRow.create_time)).where(JobRow.status.in_((PENDING, QUEUED)))
            )).scalar()  # fmt: skip
            return oldest

    async def prune(self, before: datetime) -> int:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(JobRow).where(JobRow.status.in_(TERMINAL), JobRow.end_time < before))
            return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------------ schedules
    async def schedules(self, library_ids: Sequence[str] | None = None) -> dict[str, ScheduleRow]:
        query = select(ScheduleRow)
        if library_ids is not None:
            query = query.where(ScheduleRow.library_id.in_(list(library_ids)))
        async with self._sessions() as session:
            return {row.library_id: row for row in (await session.execute(query)).scalars()}

    async def update_schedule(
        self, library_id: str, values: dict[str, Any], *, in_transaction: InTransaction | None = None
    ) -> ScheduleRow:
        """Upsert the library's own schedule fields; `in_transaction(session, row)` runs just before the commit."""
        async with self._sessions.begin() as session:
            stmt = insert(ScheduleRow).values(library_id=library_id, update_time=now(), **values)
            upsert = stmt.on_conflict_do_update(
                index_elements=[ScheduleRow.library_id], set_={**values, "update_time": now()}
            ).returning(ScheduleRow)
            row: ScheduleRow = (await session.execute(upsert)).scalars().one()
            if in_transaction is not None:
                await in_transaction(session, row)
            return row

    # ------------------------------------------------------------------ leader
    async def record_leader(self, replica: str, since: datetime, tick: datetime | None) -> None:
        async with self._sessions.begin() as session:
            stmt = insert(LeaderRow).values(id=1, replica=replica, since=since, last_tick=tick)
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[LeaderRow.id], set_={"replica": replica, "since": since, "last_tick": tick}
                )
            )

    async def leader(self) -> LeaderRow | None:
        async with self._sessions() as session:
            return await session.get(LeaderRow, 1)


def history_of(row: ScheduleRow | None, library: common_pb2.Library) -> History:
    """The policy's view of a library's history; the catalog's last scan times stand in before any job."""
    last_scan = library.last_scan_time.ToDatetime(UTC) if library.HasField("last_scan_time") else None
    last_deep = library.last_deep_scan_time.ToDatetime(UTC) if library.HasField("last_deep_scan_time") else None
    if row is None:
        return History(last_success=last_scan, last_deep=last_deep)
    return History(
        last_success=row.last_success or last_scan,
        last_deep=row.last_deep or last_deep,
        incrementals_since_deep=row.incrementals_since_deep,
        consecutive_failures=row.consecutive_failures,
        last_failure=row.last_failure,
    )
