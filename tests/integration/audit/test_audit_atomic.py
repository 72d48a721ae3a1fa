"""An audit record commits with the change it reports, against real PostgreSQL: a transaction that fails after the
record was written inside it leaves neither the change, nor the audit row, nor its outbox event; a committed one
leaves all three. Covered for both ways a service passes its transaction (an `AsyncSession` in auth and the
scheduler, the `AsyncConnection` under the catalog's psycopg cursor) and at the domain call sites."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from plexsync.catalog.migrate import migrate as migrate_catalog
from plexsync.catalog.repository import Repository
from plexsync.catalog.store import Store
from plexsync.common.audit import AuditLog, AuditSession, Outcome
from plexsync.common.db import create_engine
from plexsync.scheduler.migrate import migrate as migrate_scheduler
from plexsync.scheduler.models import ScheduleRow
from plexsync.scheduler.repository import Enqueued, JobRepository, JobSpec
from plexsync.v1 import audit_pb2, catalog_pb2, common_pb2
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

DEEP = common_pb2.SCAN_MODE_DEEP


class Boom(RuntimeError):
    """The failure forced inside a transaction after its audit record was written."""


class FailsAfterRecording(AuditLog):
    """Writes the record as AuditLog does, then fails: the caller's transaction must roll back with the record."""

    async def record(self, action: str, resource_type: str = "", resource_id: str = "", **kwargs: Any) -> None:
        await super().record(action, resource_type, resource_id, **kwargs)
        raise Boom(f"after recording {action}")


@pytest.fixture(scope="module")
async def scheduler_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate_scheduler, database_url)
    engine = create_engine(database_url, schema="scheduler", pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate_catalog, database_url)
    store = Store(database_url, pool_size=4)
    yield store
    await store.dispose()


async def records(engine: AsyncEngine, resource_id: str) -> list[dict[str, Any]]:
    """The audit rows of a resource, each with the outbox event (parsed) stored for it, if any."""
    async with engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in await conn.execute(
                text("SELECT event_id, action, before, after FROM audit_events WHERE resource_id = :id ORDER BY id"),
                {"id": resource_id},
            )
        ]
        for row in rows:
            payload = await conn.scalar(
                text("SELECT payload FROM outbox WHERE msg_id = :m"), {"m": str(row["event_id"])}
            )
            row["event"] = audit_pb2.AuditEvent.FromString(payload) if payload is not None else None
    return rows


async def outbox_mentions(engine: AsyncEngine, resource_id: str) -> int:
    """Outbox rows whose event names the resource (an event without its audit row would show up here)."""
    async with engine.connect() as conn:
        query = text("SELECT payload FROM outbox WHERE starts_with(subject, 'plexsync.v1.audit.')")
        payloads = (await conn.execute(query)).all()
    return sum(audit_pb2.AuditEvent.FromString(p[0]).resource_id == resource_id for p in payloads)


def assert_published(rows: list[dict[str, Any]], service: str) -> None:
    for row in rows:
        assert row["event"] is not None, f"no outbox event for {row['action']}"
        assert row["event"].event_id == str(row["event_id"]) and row["event"].service == service


async def schedule_exists(engine: AsyncEngine, library_id: str) -> bool:
    async with async_sessionmaker(engine)() as session:
        return await session.get(ScheduleRow, library_id) is not None


def spec(library_id: str) -> JobSpec:
    library = common_pb2.Library(id=library_id, server_id="s1", name=library_id)
    return JobSpec(library=library, mode=DEEP, force=False, trigger=common_pb2.JOB_TRIGGER_MANUAL, triggered_by="test",
                   reason="test", due_time=datetime.now(UTC))  # fmt: skip


# ---------------------------------------------------------------------------------------- AuditLog with a session


async def test_a_session_that_rolls_back_takes_its_record_and_event_with_it(scheduler_engine: AsyncEngine) -> None:
    audit, sessions = AuditLog(scheduler_engine, "scheduler"), async_sessionmaker(scheduler_engine)
    library_id = f"lib-{uuid.uuid4()}"
    with pytest.raises(Boom):
        async with sessions() as session, session.begin():
            session.add(ScheduleRow(library_id=library_id, deep_every=3))
            await session.flush()
            await audit.record("schedule.update", "library", library_id, after={"deep_every": 3}, session=session)
            assert len(await _rows_on(session, library_id)) == 1  # written, in this transaction
            raise Boom("the change fails after its record was written")
    assert not await schedule_exists(scheduler_engine, library_id)
    assert await records(scheduler_engine, library_id) == []
    assert await outbox_mentions(scheduler_engine, library_id) == 0


async def _rows_on(session: AuditSession, resource_id: str) -> list[Any]:
    query = text("SELECT action FROM audit_events WHERE resource_id = :id")
    return list((await session.execute(query, {"id": resource_id})).all())


async def test_a_committed_session_keeps_the_change_its_record_and_event(scheduler_engine: AsyncEngine) -> None:
    audit, sessions = AuditLog(scheduler_engine, "scheduler"), async_sessionmaker(scheduler_engine)
    library_id = f"lib-{uuid.uuid4()}"
    async with sessions() as session, session.begin():
        session.add(ScheduleRow(library_id=library_id, deep_every=3))
        await audit.record("schedule.update", "library", library_id, after={"deep_every": 3}, session=session)
    assert await schedule_exists(scheduler_engine, library_id)
    rows = await records(scheduler_engine, library_id)
    assert [(r["action"], r["after"]) for r in rows] == [("schedule.update", {"deep_every": 3})]
    assert_published(rows, "scheduler")


async def test_without_a_session_a_record_keeps_a_transaction_of_its_own(scheduler_engine: AsyncEngine) -> None:
    audit, sessions = AuditLog(scheduler_engine, "scheduler"), async_sessionmaker(scheduler_engine)
    resource = f"srv-{uuid.uuid4()}"
    with pytest.raises(Boom):
        async with sessions() as session, session.begin():
            await audit.record("credentials.fetch", "server", resource, outcome=Outcome.FAILURE, reason="refused")
            raise Boom("a failure of the caller's own transaction")
    rows = await records(scheduler_engine, resource)
    assert [r["action"] for r in rows] == ["credentials.fetch"]
    assert_published(rows, "scheduler")


# ---------------------------------------------------------------------------------------- scheduler call sites


async def test_a_schedule_update_failing_on_a_constraint_leaves_no_record(scheduler_engine: AsyncEngine) -> None:
    repo, audit = JobRepository(scheduler_engine), AuditLog(scheduler_engine, "scheduler")
    library_id = f"lib-{uuid.uuid4()}"

    async def record_then_violate(session: AuditSession, row: ScheduleRow) -> None:
        await audit.record("schedule.update", "library", row.library_id, after={"deep_every": 2}, session=session)
        # The same library's schedule again: a primary key violation, after the record was written.
        await session.execute(
            text("INSERT INTO schedules (library_id, update_time) VALUES (:id, now())"), {"id": row.library_id}
        )

    with pytest.raises(IntegrityError):
        await repo.update_schedule(library_id, {"deep_every": 2}, in_transaction=record_then_violate)
    assert not await schedule_exists(scheduler_engine, library_id)
    assert await records(scheduler_engine, library_id) == []
    assert await outbox_mentions(scheduler_engine, library_id) == 0

    async def record(session: AuditSession, row: ScheduleRow) -> None:
        await audit.record("schedule.update", "library", row.library_id, after={"deep_every": 2}, session=session)

    await repo.update_schedule(library_id, {"deep_every": 2}, in_transaction=record)
    assert await schedule_exists(scheduler_engine, library_id)
    rows = await records(scheduler_engine, library_id)
    assert [r["action"] for r in rows] == ["schedule.update"]
    assert_published(rows, "scheduler")


async def test_a_deep_trigger_and_its_jobs_commit_together(scheduler_engine: AsyncEngine) -> None:
    repo = JobRepository(scheduler_engine)
    failing, audit = FailsAfterRecording(scheduler_engine, "scheduler"), AuditLog(scheduler_engine, "scheduler")
    libs = [f"lib-{uuid.uuid4()}" for _ in range(2)]
    target = f"srv-{uuid.uuid4()}"

    def recorder(log: AuditLog) -> Any:
        async def hook(session: AuditSession, results: list[Enqueued]) -> None:
            made = [str(e.job.id) for e in results if e.created]
            await log.record("sync.trigger_deep", "server", target, after={"created_jobs": made}, session=session)

        return hook

    with pytest.raises(Boom):
        await repo.enqueue_all([spec(lib) for lib in libs], in_transaction=recorder(failing))
    for lib in libs:
        assert await repo.list_jobs(library_id=lib, server_id="", status=0, limit=10, after=None) == []
    assert await records(scheduler_engine, target) == []
    assert await outbox_mentions(scheduler_engine, target) == 0

    done = await repo.enqueue_all([spec(lib) for lib in libs], in_transaction=recorder(audit))
    assert all(e.created for e in done)
    rows = await records(scheduler_engine, target)
    assert [r["after"] for r in rows] == [{"created_jobs": [str(e.job.id) for e in done]}]
    assert_published(rows, "scheduler")
    for e in done:
        await repo.cancel(e.job.id, "test over")


# ---------------------------------------------------------------------------------------- catalog (psycopg cursor)


async def test_the_catalogs_cursor_and_record_share_one_transaction(store: Store) -> None:
    audit = AuditLog(store.engine, "catalog")
    server_id = f"srv-{uuid.uuid4()}"
    with pytest.raises(Boom):
        async with store.transaction() as (cur, conn):
            await cur.execute("INSERT INTO media_sources (server_id, name) VALUES (%s, %s)", (server_id, "x"))
            await audit.record("libraries.register", "server", server_id, after={"added": ["x"]}, session=conn)
            raise Boom("the change fails after its record was written")
    async with store.cursor() as cur:
        await cur.execute("SELECT count(*) FROM media_sources WHERE server_id = %s", (server_id,))
        assert (await cur.fetchone()) == (0,)
    assert await records(store.engine, server_id) == []
    assert await outbox_mentions(store.engine, server_id) == 0


def _sections(*names: str) -> list[catalog_pb2.LibrarySection]:
    return [
        catalog_pb2.LibrarySection(plex_key=str(i), name=n, kind=common_pb2.LIBRARY_KIND_MOVIES)
        for i, n in enumerate(names, 1)
    ]


async def test_catalog_changes_and_their_records_commit_or_roll_back_together(store: Store) -> None:
    server_id = f"srv-{uuid.uuid4()}"
    register = catalog_pb2.RegisterLibrariesRequest(server_id=server_id, server_name="s", sections=_sections("Films"))
    with pytest.raises(Boom):
        await Repository(store, FailsAfterRecording(store.engine, "catalog")).register_libraries(register)
    async with store.cursor() as cur:
        await cur.execute("SELECT count(*) FROM media_sources WHERE server_id = %s", (server_id,))
        assert (await cur.fetchone()) == (0,)
    assert await records(store.engine, server_id) == []

    repository = Repository(store, AuditLog(store.engine, "catalog"))
    library = (await repository.register_libraries(register)).libraries[0]
    rows = await records(store.engine, server_id)
    assert [(r["action"], r["after"]) for r in rows] == [
        ("libraries.register", {"added": ["Films"], "updated": [], "removed": []})
    ]
    assert_published(rows, "catalog")

    change = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=library.id, sync_enabled=False), update_mask=FieldMask(paths=["sync_enabled"])
    )
    with pytest.raises(Boom):
        await Repository(store, FailsAfterRecording(store.engine, "catalog")).update_library(change)
    assert (await repository.get_library(library.id)).sync_enabled
    assert await records(store.engine, library.id) == []
    assert await outbox_mentions(store.engine, library.id) == 0

    after = await repository.update_library(change)
    assert not after.sync_enabled
    rows = await records(store.engine, library.id)
    assert [r["action"] for r in rows] == ["library.update"]
    assert rows[0]["before"]["sync_enabled"] is True and rows[0]["after"]["sync_enabled"] is False
    assert_published(rows, "catalog")
