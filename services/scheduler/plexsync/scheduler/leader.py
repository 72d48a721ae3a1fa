"""Leadership among scheduler replicas: a PostgreSQL session advisory lock held on a connection of its own.

The lock is the lease: it is released the moment its holder's session ends (a killed process's socket closes;
TCP keepalives bound a vanished host), and the followers try to take it every PLEXSYNC_SCHEDULER_LEADER_POLL_SECONDS,
so a new leader schedules within a couple of polls. The leader checks its session before each round of work and
steps down the moment it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import psycopg
from plexsync.common.db import libpq_url

log = logging.getLogger(__name__)

LEADER_LOCK = "plexsync.scheduler.leader"
# Server-side keepalives on the lock's session: PostgreSQL drops (and so unlocks) a vanished leader in ~8 s.
KEEPALIVE_OPTIONS = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3"


class LeaderLease:
    def __init__(self, database_url: str) -> None:
        self._url = libpq_url(database_url)
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self.since: datetime | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and self.since is not None

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True while this process holds it."""
        if self.held:
            return await self.check()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, options=KEEPALIVE_OPTIONS,
                    application_name="plexsync-scheduler-leader", connect_timeout=5,
                )  # fmt: skip
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (LEADER_LOCK,))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            log.warning("could not ask for the scheduler lease", extra={"error": type(exc).__name__})
            await self._drop()
            return False
        if row is not None and row[0]:
            self.since = datetime.now(UTC)
            return True
        return False

    async def check(self) -> bool:
        """Whether the lease's session still answers (if not, this replica is no longer the leader)."""
        if self._conn is None:
            return False
        try:
            await asyncio.wait_for(self._conn.execute("SELECT 1"), 5)
            return True
        except (psycopg.Error, TimeoutError):
            log.warning("lost the scheduler lease's database session; stepping down")
            await self._drop()
            return False

    async def release(self) -> None:
        if self._conn is not None and not self._conn.closed and self.held:
            with contextlib.suppress(psycopg.Error):
                await self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LEADER_LOCK,))
        await self._drop()

    async def _drop(self) -> None:
        self.since = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
