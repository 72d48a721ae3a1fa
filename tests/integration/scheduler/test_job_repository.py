"""The job repository against real PostgreSQL: concurrent triggers make one job, dispatch never exceeds a limit,
history is pruned by age, and the per-library history the policy reads follows finished jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from plexsync.common.db import create_engine
from plexsync.scheduler.migrate import migrate
from plexsync.scheduler.models import FAILED, PENDING, QUEUED, SUCCEEDED
from plexsync.scheduler.repository import JobRepository, JobSpec
from plexsync.v1 import common_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

INC, DEEP = common_pb2.SCAN_MODE_INCREMENTAL, common_pb2.SCAN_MODE_DEEP


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate, database_url)
    engine = create_engine(database_url, schema="scheduler", pool_size=12)
    yield engine
    await engine.dispose()


def spec(library_id: str, server_id: str = "s1", *, mode: int = INC, force: bool = False) -> JobSpec:
    library = common_pb2.Library(id=library_id, server_id=server_id, name=library_id)
    return JobSpec(library=library, mode=mode, force=force, trigger=common_pb2.JOB_TRIGGER_MANUAL, triggered_by="test",
                   reason="test", due_time=datetime.now(UTC))  # fmt: skip


async def test_concurrent_triggers_make_one_job_and_a_deep_request_raises_it(engine: AsyncEngine) -> None:
    repo = JobRepository(engine)
    lib = f"lib-{uuid.uuid4()}"
    results = await asyncio.gather(*(repo.enqueue(spec(lib, mode=DEEP if i == 5 else INC)) for i in range(10)))
    assert len({r.job.id for r in results}) == 1 and sum(r.created for r in results) == 1
    job = await repo.get(results[0].job.id)
    assert job is not None and job.status == PENDING and job.mode == DEEP
    await repo.cancel(job.id, "done with it")


async def test_dispatch_keeps_the_total_and_per_server_limits(engine: AsyncEngine) -> None:
    repo = JobRepository(engine)
    for _ in range(6):
        await repo.enqueue(spec(f"lib-{uuid.uuid4()}", "sA"))
        await repo.enqueue(spec(f"lib-{uuid.uuid4()}", "sB"))
    batches = await asyncio.gather(*(repo.dispatch(max_running=3, max_per_server=2) for _ in range(5)))
    chosen = [job for batch in batches for job in batch]
    assert len(chosen) == 3
    per_server = {s: sum(1 for j in chosen if j.server_id == s) for s in ("sA", "sB")}
    assert max(per_server.values()) == 2
    assert await repo.dispatch(max_running=3, max_per_server=2) == []
    assert (await repo.status_counts())[QUEUED] == 3


async def test_finished_jobs_feed_the_history_and_old_ones_are_pruned(engine: AsyncEngine) -> None:
    repo = JobRepository(engine)
    lib = f"lib-{uuid.uuid4()}"
    at = datetime.now(UTC) - timedelta(days=40)
    for mode, status in ((INC, SUCCEEDED), (INC, FAILED), (DEEP, SUCCEEDED), (INC, SUCCEEDED)):
        job = (await repo.enqueue(spec(lib, mode=mode))).job
        await repo.started(job.id, scan_id=str(uuid.uuid4()), replica="r", attempt=1, at=at)
        await repo.finish(job_id=job.id, scan_id="", status=status, counts={}, stats={}, error="", at=at)
        at += timedelta(hours=1)
    history = (await repo.schedules([lib]))[lib]
    assert (history.incrementals_since_deep, history.consecutive_failures) == (1, 0)
    assert history.last_deep is not None and history.last_success is not None
    assert history.last_success > history.last_deep and history.last_failure is not None
    fresh = (await repo.enqueue(spec(lib))).job
    assert await repo.prune(datetime.now(UTC) - timedelta(days=30)) >= 4
    remaining = await repo.list_jobs(library_id=lib, server_id="", status=0, limit=10, after=None)
    assert [j.id for j in remaining] == [fresh.id]
