"""The reaper announces what it reaps: a scan whose scanner died gets its `failed` event in the scanner's outbox, in
the transaction that marks it FAILED, once however many reapers race for it (real PostgreSQL, no NATS needed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from plexsync.common.db import create_engine
from plexsync.scanner.events import REAPED_CODE, reaped_event_id
from plexsync.scanner.migrate import migrate
from plexsync.scanner.models import ScanRow
from plexsync.scanner.repository import REAPED_REASON, ScanRepository, now
from plexsync.v1 import common_pb2, events_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    await asyncio.to_thread(migrate, database_url)
    made = [create_engine(database_url, schema="scanner", pool_size=2) for _ in range(3)]
    async with made[0].begin() as conn:
        await conn.execute(text("DELETE FROM outbox"))
        await conn.execute(text("DELETE FROM scans"))
    yield made
    for engine in made:
        await engine.dispose()


async def abandoned_scan(engine: AsyncEngine, *, job_id: str) -> ScanRow:
    """A RUNNING scan of a scanner on another host that stopped heart-beating a minute ago."""
    stale = now() - timedelta(minutes=1)
    row = ScanRow(
        id=uuid.uuid4(), library_id=str(uuid.uuid4()), server_id=str(uuid.uuid4()), mode=common_pb2.SCAN_MODE_DEEP,
        status=common_pb2.SCAN_STATUS_RUNNING, force=False, job_id=job_id, trace_id="",
        counts={"seen": 42, "total": 200}, stats={}, error="", owner="elsewhere:1:gone", replica="elsewhere:1:gone",
        attempt=1, heartbeat_at=stale, create_time=stale, start_time=stale,
    )  # fmt: skip
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        session.add(row)
    return row


async def outbox_rows(engine: AsyncEngine) -> list[tuple[str, str, bytes]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT subject, msg_id, payload FROM outbox ORDER BY id"))
        return [(r.subject, r.msg_id, bytes(r.payload)) for r in result]


async def test_racing_reapers_mark_a_dead_scanners_scan_failed_and_announce_it_once(
    engines: list[AsyncEngine],
) -> None:
    job_id = str(uuid.uuid4())
    row = await abandoned_scan(engines[0], job_id=job_id)
    reapers = [ScanRepository(engine, stale_after=5) for engine in engines]

    reaped = await asyncio.gather(*(r.reap() for r in reapers))

    assert sum(reaped) == 1, reaped
    scan = await reapers[0].get(row.id)
    assert scan is not None and scan.status == common_pb2.SCAN_STATUS_FAILED and scan.error == REAPED_REASON
    [(subject, msg_id, payload)] = await outbox_rows(engines[0])
    event = events_pb2.ScanEvent.FromString(payload)
    assert subject == f"plexsync.v1.scan.{row.library_id}.failed"
    assert msg_id == event.event_id == reaped_event_id(str(row.id))
    assert (event.scan_id, event.library_id, event.server_id, event.job_id, event.mode) == (
        str(row.id), row.library_id, row.server_id, job_id, common_pb2.SCAN_MODE_DEEP,
    )  # fmt: skip
    assert event.failed.error == REAPED_REASON and event.failed.code == REAPED_CODE
    assert (event.failed.counts.seen, event.failed.counts.total) == (42, 200)
    assert event.HasField("time")

    # Reaping again finds nothing to do and announces nothing more.
    assert await reapers[1].reap() == 0
    assert len(await outbox_rows(engines[0])) == 1


async def test_a_scan_reaped_when_a_new_scan_of_its_library_begins_is_announced_too(
    engines: list[AsyncEngine],
) -> None:
    row = await abandoned_scan(engines[0], job_id="")
    repo = ScanRepository(engines[1], stale_after=5)
    new = await repo.create(
        library_id=row.library_id, server_id=row.server_id, mode=common_pb2.SCAN_MODE_INCREMENTAL, force=False,
        job_id="", trace_id="",
    )  # fmt: skip
    assert new.id != row.id
    [(_, msg_id, payload)] = await outbox_rows(engines[0])
    event = events_pb2.ScanEvent.FromString(payload)
    assert msg_id == reaped_event_id(str(row.id)) and event.scan_id == str(row.id) and event.job_id == ""
    assert REAPED_REASON in event.failed.error
