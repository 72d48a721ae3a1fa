"""``python -m plexsync.scheduler``: run the scheduler service; ``python -m plexsync.scheduler migrate`` migrates."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable

from plexsync.common.audit import AuditLog
from plexsync.common.audit_server import add_audit_service
from plexsync.common.clients import peer_channel
from plexsync.common.config import MissingSettingError
from plexsync.common.db import create_engine, wait_for_database
from plexsync.common.eventbus import EventBus
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.logs import configure_logging
from plexsync.common.metrics import METRICS
from plexsync.common.migrations import SchemaBehindError
from plexsync.common.outbox import OutboxRelay
from plexsync.common.readiness import database_check
from plexsync.scheduler.leader import LeaderLease
from plexsync.scheduler.migrate import MIGRATIONS, migrate
from plexsync.scheduler.peers import GrpcCatalog, GrpcScanner, GrpcServers
from plexsync.scheduler.queue import JetStreamJobQueue, ScanReports
from plexsync.scheduler.repository import JobRepository
from plexsync.scheduler.server import SchedulerServicer
from plexsync.scheduler.service import REPLICA, Scheduler
from plexsync.scheduler.settings import SchedulerSettings
from plexsync.v1 import scheduler_pb2_grpc
from pydantic import ValidationError

log = logging.getLogger("plexsync.scheduler")
PRUNE_SECONDS = 3600.0


class LeaderLoop:
    """While this replica holds the lease: tick, re-enumerate servers, reconcile and prune, each on its period."""

    def __init__(self, scheduler: Scheduler, lease: LeaderLease, settings: SchedulerSettings) -> None:
        self.scheduler = scheduler
        self.lease = lease
        self.settings = settings
        self._last: dict[str, float] = {}

    def _due(self, name: str, period: float) -> bool:
        t = time.monotonic()
        if t - self._last.get(name, -1e18) >= period:
            self._last[name] = t
            return True
        return False

    async def run(self) -> None:
        s = self.settings
        while True:
            leading = await self.lease.try_acquire()
            if leading and not self.scheduler.is_leader:
                log.info("this replica leads the scheduling", extra={"replica": REPLICA})
                self._last.clear()
            elif not leading and self.scheduler.is_leader:
                log.warning("this replica no longer leads the scheduling", extra={"replica": REPLICA})
            self.scheduler.is_leader = leading
            if leading:
                await self._step("server sync", s.server_sync_seconds, self.scheduler.sync_servers)
                await self._step("tick", s.tick_seconds, self.scheduler.tick)
                await self._step("reconcile", s.reconcile_seconds, self.scheduler.reconcile)
                await self._step("prune", PRUNE_SECONDS, self.scheduler.prune)
                with contextlib.suppress(Exception):
                    assert self.lease.since is not None
                    await self.scheduler.repo.record_leader(REPLICA, self.lease.since, self.scheduler.last_tick)
            await asyncio.sleep(s.leader_poll_seconds if not leading else min(s.leader_poll_seconds, s.tick_seconds))

    async def _step(self, name: str, period: float, work: Callable[[], Awaitable[object]]) -> None:
        if not self._due(name, period) or not await self.lease.check():
            return
        try:
            await work()
        except Exception:
            log.warning("scheduler %s failed; will try again", name, exc_info=True)


async def serve(settings: SchedulerSettings) -> None:
    engine = create_engine(
        settings.database_url, schema="scheduler", pool_size=4, application_name="plexsync-scheduler"
    )
    bus = EventBus(
        settings.nats_url,
        events_stream=settings.events_stream,
        jobs_stream=settings.jobs_stream,
        events_max_age_hours=settings.events_max_age_hours,
    )
    catalog_channel = peer_channel(settings, settings.catalog_addr)
    scanner_channel = peer_channel(settings, settings.scanner_addr)
    auth_channel = peer_channel(settings, settings.auth_addr)
    lease = LeaderLease(settings.database_url)
    relay = OutboxRelay(engine, bus, schema="scheduler")
    servicer = SchedulerServicer()
    audit = AuditLog(engine, "scheduler")
    app = ServiceApp("scheduler", settings, on_denied=audit.record_denied)
    app.add_readiness_check("postgresql", database_check(engine))
    app.add_service("plexsync.v1.SchedulerService", scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server, servicer)
    add_audit_service(app, audit)
    background: list[asyncio.Task[None]] = []
    reports: list[ScanReports] = []

    async def ready() -> None:
        await wait_for_database(engine)
        await asyncio.to_thread(MIGRATIONS.prepare, settings.database_url, settings.migrate_on_start)
        await bus.connect()
        relay.start()
        scheduler = Scheduler(
            settings=settings,
            repository=JobRepository(engine),
            catalog=GrpcCatalog(catalog_channel),
            scanner=GrpcScanner(scanner_channel),
            servers=GrpcServers(auth_channel),
            queue=JetStreamJobQueue(bus, relay),
            audit=audit,
        )
        feed = ScanReports(bus, scheduler.on_scan_event, scheduler.on_delivery_exhausted)
        await feed.start()
        reports.append(feed)
        METRICS.observe_job_queue(lambda: scheduler.queue_depth, lambda: scheduler.oldest_waiting_seconds)
        servicer.attach(scheduler, bus)
        background.append(asyncio.create_task(LeaderLoop(scheduler, lease, settings).run(), name="leader"))

        def step_down() -> None:
            # At SIGTERM give the lead away at once (a follower takes it within a poll), not after the drain.
            background[0].cancel()
            scheduler.is_leader = False
            background.append(asyncio.create_task(lease.release(), name="lease-release"))

        app.on_stop_requested(step_down)

    async def close() -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for feed in reports:
            await feed.close()
        await lease.release()
        await relay.drain()
        for channel in (catalog_channel, scanner_channel, auth_channel):
            await channel.close()
        await bus.close()
        await engine.dispose()

    app.on_shutdown(close)
    await app.run(ready)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plexsync.scheduler", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    m = sub.add_parser("migrate", help="upgrade or downgrade the scheduler schema")
    m.add_argument("action", choices=["upgrade", "downgrade"], nargs="?", default="upgrade")
    m.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    try:
        settings = SchedulerSettings()
        configure_logging("scheduler", settings.log_level, settings.log_format)
        settings.require("DATABASE_URL", "NATS_URL") if args.command is None else settings.require("DATABASE_URL")
    except (MissingSettingError, ValidationError) as exc:
        print(f"plexsync.scheduler: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "migrate":
        migrate(settings.database_url, args.action, args.revision)
        return
    try:
        asyncio.run(serve(settings))
    except SchemaBehindError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
