"""Scan history in the scanner's own schema: create (one active scan per library), update, read, reap.

Reaping marks FAILED an active scan whose scanner died (a dead process of this host, or no heartbeat for
`stale_after` seconds). Nobody else will announce that end, so the reaper does: in the transaction of the status
update it writes the scan's `failed` lifecycle event (events.reaped_failed_event) to the scanner's outbox
(plexsync.common.outbox), which the relay of whichever replica runs next publishes. No NATS here: only outbox rows.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psutil
from google.protobuf.json_format import MessageToDict, ParseDict
from plexsync.common import outbox
from plexsync.common.errors import FailedPreconditionError
from plexsync.scanner.events import reaped_failed_event, scan_subject
from plexsync.scanner.models import ACTIVE_STATUSES, ScanRow
from plexsync.scanner.stats import ScanStats
from plexsync.v1 import common_pb2
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

HOST = socket.gethostname()
BOOT_ID = uuid.uuid4().hex[:12]
OWNER = f"{HOST}:{os.getpid()}:{BOOT_ID}"
FAILED = common_pb2.SCAN_STATUS_FAILED
# Why a reaped scan failed; the scheduler recognises a dead scanner's scan by these words (REAPED_MARK).
REAPED_REASON = "the scanner running this scan stopped before it ended"


def now() -> datetime:
    return datetime.now(UTC)


def counts_to_json(counts: common_pb2.ScanCounts) -> dict[str, Any]:
    return MessageToDict(counts, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def counts_from_json(data: dict[str, Any]) -> common_pb2.ScanCounts:
    return ParseDict(data or {}, common_pb2.ScanCounts(), ignore_unknown_fields=True)


def to_proto(row: ScanRow) -> common_pb2.Scan:
    scan = common_pb2.Scan(
        id=str(row.id),
        library_id=row.library_id,
        server_id=row.server_id,
        mode=cast(common_pb2.ScanMode.ValueType, row.mode),
        status=cast(common_pb2.ScanStatus.ValueType, row.status),
        force=row.force,
        counts=counts_from_json(row.counts),
        error=row.error,
        job_id=row.job_id,
        trace_id=row.trace_id,
        stats=ScanStats.from_json(row.stats).to_proto(),
        replica=row.replica,
        attempt=row.attempt,
    )
    scan.create_time.FromDatetime(row.create_time)
    if row.start_time is not None:
        scan.start_time.FromDatetime(row.start_time)
    if row.end_time is not None:
        scan.end_time.FromDatetime(row.end_time)
    return scan


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host still runs (a zombie counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def owner_dead(owner: str) -> bool:
    """Whether a scan's owner is a process of this host that no longer runs (or an earlier life of us)."""
    host, _, rest = owner.partition(":")
    pid_text, _, boot = rest.partition(":")
    if host != HOST or not pid_text.isdigit():
        return False
    if boot == BOOT_ID:
        return False
    pid = int(pid_text)
    return pid == os.getpid() or not _pid_alive(pid)


class LibraryBusyError(FailedPreconditionError):
    """The library has another scan running that is not abandoned: wait, it will end."""


@dataclass
class ScanRepository:
    engine: AsyncEngine
    stale_after: float = 60.0

    def __post_init__(self) -> None:
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create(
        self,
        *,
        library_id: str,
        server_id: str,
        mode: int,
        force: bool,
        job_id: str,
        trace_id: str,
        attempt: int = 0,
    ) -> ScanRow:
        """Insert a RUNNING scan; FAILED_PRECONDITION while another scan of the library is active."""
        for retry in range(2):
            row = ScanRow(
                id=uuid.uuid4(),
                library_id=library_id,
                server_id=server_id,
                mode=mode,
                status=common_pb2.SCAN_STATUS_RUNNING,
                force=force,
                job_id=job_id,
                trace_id=trace_id,
                counts={},
                stats={},
                error="",
                owner=OWNER,
                replica=OWNER,
                attempt=attempt,
                heartbeat_at=now(),
                create_time=now(),
                start_time=now(),
            )
            try:
                async with self._sessions.begin() as session:
                    session.add(row)
                return row
            except IntegrityError:
                active = await self.active_for_library(library_id)
                if active is None:
                    continue
                if retry == 0 and self._abandoned(active):
                    await self.mark_failed(active.id, f"{REAPED_REASON} (found when a new scan of the library began)")
                    continue
                raise LibraryBusyError(
                    f"library {library_id} already has scan {active.id} running (started "
                    f"{active.create_time.isoformat(timespec='seconds')}); wait for it to end or cancel it "
                    "with CancelScan"
                ) from None
        raise LibraryBusyError(f"library {library_id} has another scan starting; try again")

    async def record(
        self,
        *,
        library_id: str,
        server_id: str,
        mode: int,
        force: bool,
        job_id: str,
        trace_id: str,
        attempt: int,
        status: int,
        error: str,
    ) -> ScanRow:
        """Insert a scan that ended before it ran (a job that could not start, or was cancelled first), so the
        job's history and its scheduler see what became of it."""
        at = now()
        row = ScanRow(
            id=uuid.uuid4(), library_id=library_id, server_id=server_id, mode=mode, status=status, force=force,
            job_id=job_id, trace_id=trace_id, counts={}, stats={}, error=error, owner=OWNER, replica=OWNER,
            attempt=attempt, heartbeat_at=at, create_time=at, start_time=at, end_time=at,
        )  # fmt: skip
        async with self._sessions.begin() as session:
            session.add(row)
        return row

    async def for_job(self, job_id: str) -> list[ScanRow]:
        """The scans run for a scheduler job (one per delivery that got that far), oldest first."""
        async with self._sessions() as session:
            result = await session.execute(
                select(ScanRow).where(ScanRow.job_id == job_id).order_by(ScanRow.create_time, ScanRow.id)
            )
            return list(result.scalars())

    def _abandoned(self, row: ScanRow) -> bool:
        if owner_dead(row.owner):
            return True
        beat = row.heartbeat_at or row.create_time
        return beat < now() - timedelta(seconds=self.stale_after)

    async def active_for_library(self, library_id: str) -> ScanRow | None:
        async with self._sessions() as session:
            result = await session.execute(
                select(ScanRow).where(ScanRow.library_id == library_id, ScanRow.status.in_(ACTIVE_STATUSES))
            )
            return result.scalars().first()

    async def update(self, scan_id: uuid.UUID, **values: Any) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(ScanRow).where(ScanRow.id == scan_id).values(**values))

    async def heartbeat(self, scan_id: uuid.UUID, counts: common_pb2.ScanCounts, stats: ScanStats) -> None:
        await self.update(scan_id, counts=counts_to_json(counts), stats=stats.to_json(), heartbeat_at=now())

    async def finish(
        self,
        scan_id: uuid.UUID,
        status: int,
        counts: common_pb2.ScanCounts,
        error: str = "",
        stats: ScanStats | None = None,
        requeued: bool = False,
    ) -> ScanRow | None:
        await self.update(
            scan_id,
            status=status,
            requeued=requeued,
            counts=counts_to_json(counts),
            stats=(stats or ScanStats()).to_json(),
            error=error,
            end_time=now(),
            heartbeat_at=now(),
        )
        return await self.get(scan_id)

    async def mark_failed(self, scan_id: uuid.UUID, error: str) -> bool:
        """Mark an abandoned active scan FAILED and announce it; whether this call did (False: it had ended).

        The `failed` event goes to the outbox in the same transaction as the update, and only if the UPDATE
        matched (the row was still active): two reapers racing for one scan serialise on its row, the second
        matches nothing and writes nothing, so at most one event is stored per scan. Its event_id is derived
        from the scan id (events.reaped_event_id), so even a repeat would be dropped by JetStream's
        de-duplication and by consumers that dedupe by event_id.
        """
        async with self._sessions.begin() as session:
            row = (
                await session.execute(
                    update(ScanRow)
                    .where(ScanRow.id == scan_id, ScanRow.status.in_(ACTIVE_STATUSES))
                    .values(status=FAILED, error=error, end_time=now())
                    .returning(
                        ScanRow.library_id, ScanRow.server_id, ScanRow.mode, ScanRow.job_id, ScanRow.counts,
                        ScanRow.stats,
                    )
                )
            ).first()  # fmt: skip
            if row is None:
                return False
            event = reaped_failed_event(
                scan_id=str(scan_id),
                library_id=row.library_id,
                server_id=row.server_id,
                mode=cast(common_pb2.ScanMode.ValueType, row.mode),
                job_id=row.job_id or "",
                counts=counts_from_json(row.counts),
                stats=ScanStats.from_json(row.stats).to_proto(),
                error=error,
            )
            await outbox.add(session, scan_subject(row.library_id, "failed"), event, msg_id=event.event_id)
        return True

    async def get(self, scan_id: uuid.UUID) -> ScanRow | None:
        async with self._sessions() as session:
            return await session.get(ScanRow, scan_id)

    async def list(
        self, *, library_id: str, status: int, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[ScanRow]:
        """Newest first; keyset pagination on (create_time, id)."""
        query = select(ScanRow)
        if library_id:
            query = query.where(ScanRow.library_id == library_id)
        if status:
            query = query.where(ScanRow.status == status)
        if after is not None:
            t, i = after
            query = query.where(or_(ScanRow.create_time < t, and_(ScanRow.create_time == t, ScanRow.id < i)))
        query = query.order_by(ScanRow.create_time.desc(), ScanRow.id.desc()).limit(limit)
        async with self._sessions() as session:
            return list((await session.execute(query)).scalars())

    async def reap(self, *, at_startup: bool = False) -> int:
        """Mark FAILED the active scans whose scanner died (this host's dead processes, or no heartbeat), each with
        its `failed` event in the outbox (`mark_failed`); how many this call marked."""
        async with self._sessions() as session:
            rows = list((await session.execute(select(ScanRow).where(ScanRow.status.in_(ACTIVE_STATUSES)))).scalars())
        reaped = 0
        for row in rows:
            if row.owner == OWNER:
                continue
            if self._abandoned(row):
                why = REAPED_REASON + (" (found at start-up)" if at_startup else "")
                if await self.mark_failed(row.id, why):
                    reaped += 1
        return reaped
