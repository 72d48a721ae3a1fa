"""``python -m plexsync.scanner``: run the scanner service; ``python -m plexsync.scanner migrate`` migrates."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from plexsync.common.audit import AuditLog
from plexsync.common.audit_server import add_audit_service
from plexsync.common.clients import peer_channel
from plexsync.common.config import MissingSettingError
from plexsync.common.db import create_engine, wait_for_database
from plexsync.common.eventbus import EventBus
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.logs import configure_logging
from plexsync.common.migrations import SchemaBehindError
from plexsync.common.outbox import OutboxRelay
from plexsync.common.readiness import database_check
from plexsync.scanner.events import EventPublisher
from plexsync.scanner.jobs import JobRunner
from plexsync.scanner.manager import ScanManager
from plexsync.scanner.migrate import MIGRATIONS, migrate
from plexsync.scanner.peers import GrpcCatalog, GrpcCredentials, GrpcScheduler
from plexsync.scanner.realtime.leases import Lease, WatchLeases
from plexsync.scanner.realtime.supervisor import WatchSupervisor
from plexsync.scanner.realtime.watcher import ServerWatcher, WatcherOptions
from plexsync.scanner.repository import OWNER, ScanRepository
from plexsync.scanner.server import ScannerServicer
from plexsync.scanner.settings import ScannerSettings
from plexsync.v1 import scanner_pb2_grpc
from pydantic import ValidationError

log = logging.getLogger("plexsync.scanner")
GC_THRESHOLD_YOUNG = 20_000


async def serve(settings: ScannerSettings) -> None:
    engine = create_engine(settings.database_url, schema="scanner", pool_size=4, application_name="plexsync-scanner")
    bus = EventBus(
        settings.nats_url,
        events_stream=settings.events_stream,
        jobs_stream=settings.jobs_stream,
        events_max_age_hours=settings.events_max_age_hours,
    )
    catalog_channel = peer_channel(settings, settings.catalog_addr)
    auth_channel = peer_channel(settings, settings.auth_addr)
    scheduler_channel = peer_channel(settings, settings.scheduler_addr)
    leases = WatchLeases(engine, holder=OWNER, ttl_seconds=settings.realtime_lease_seconds)
    relay = OutboxRelay(engine, bus, schema="scanner")
    servicer = ScannerServicer()
    audit = AuditLog(engine, "scanner")  # the scanner records refused calls; its changes are the catalog's
    app = ServiceApp("scanner", settings, on_denied=audit.record_denied)
    app.add_readiness_check("postgresql", database_check(engine))
    app.add_service("plexsync.v1.ScannerService", scanner_pb2_grpc.add_ScannerServiceServicer_to_server, servicer)
    add_audit_service(app, audit)
    managers: list[ScanManager] = []
    runners: list[JobRunner] = []
    supervisors: list[WatchSupervisor] = []

    async def ready() -> None:
        await wait_for_database(engine)
        await asyncio.to_thread(MIGRATIONS.prepare, settings.database_url, settings.migrate_on_start)
        await bus.connect()
        relay.start()
        manager = ScanManager(
            settings=settings,
            catalog=GrpcCatalog(catalog_channel),
            credentials=GrpcCredentials(auth_channel),
            repository=ScanRepository(engine, stale_after=settings.scan_stale_seconds),
            publisher=EventPublisher(bus, outbox=relay),
        )
        await manager.start()
        managers.append(manager)
        servicer.attach(manager, leases)
        runner = JobRunner(manager=manager, bus=bus, settings=settings)
        await runner.start()
        runners.append(runner)
        # At SIGTERM, stop taking jobs and hand the running ones back at once, not after the gRPC drain (which may
        # wait for watchers): another replica starts them meanwhile.
        app.on_stop_requested(runner.begin_close)
        if settings.realtime_enabled:
            supervisor = realtime_supervisor(settings, manager, leases, GrpcScheduler(scheduler_channel))
            supervisor.start()
            supervisors.append(supervisor)
        # A scan allocates millions of short-lived, acyclic objects (parsed pages, protobufs); with the default
        # thresholds the cyclic GC keeps re-traversing everything imported at start-up, ~20-30% of a listing's
        # parse time. Freeze that heap (it lives as long as the process) and collect the young less often.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD_YOUNG, 10, 10)

    async def close() -> None:
        for runner in runners:  # first: its job scans end as requeued and go back to the queue
            await runner.close()
        for supervisor in supervisors:  # releases the leases: another replica takes the watches at once
            await supervisor.close()
        for manager in managers:
            await manager.close()
        await relay.drain()  # after the managers: their scans' last events are in the outbox by now
        await catalog_channel.close()
        await auth_channel.close()
        await scheduler_channel.close()
        await bus.close()
        await engine.dispose()

    app.on_shutdown(close)
    await app.run(ready)


def realtime_supervisor(
    settings: ScannerSettings, manager: ScanManager, leases: WatchLeases, scheduler: GrpcScheduler
) -> WatchSupervisor:
    """The replica's share of the real-time watchers, built from the same peers and Plex clients as scans."""
    catalog, credentials = manager.catalog, manager.credentials
    assert isinstance(catalog, GrpcCatalog) and isinstance(credentials, GrpcCredentials)
    options = WatcherOptions(
        heartbeat=settings.realtime_heartbeat_seconds,
        backoff_max=settings.realtime_backoff_max_seconds,
        debounce=settings.realtime_debounce_seconds,
        max_wait=settings.realtime_max_wait_seconds,
        metadata_batch=settings.scan_metadata_batch,
        tls=settings.plex_tls(),
    )

    def make_watcher(server_id: str, lease: Lease) -> ServerWatcher:
        return ServerWatcher(
            server_id,
            catalog=catalog,
            credentials=credentials,
            scheduler=scheduler,
            events=manager.publisher,
            make_plex=manager.plex_client,
            options=options,
            took_over_from=lease.previous_holder,
        )

    return WatchSupervisor(
        leases=leases,
        servers=credentials,
        make_watcher=make_watcher,
        poll_seconds=settings.realtime_lease_seconds / 3,
        servers_every_seconds=settings.realtime_servers_poll_seconds,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plexsync.scanner", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    m = sub.add_parser("migrate", help="upgrade or downgrade the scanner schema")
    m.add_argument("action", choices=["upgrade", "downgrade"], nargs="?", default="upgrade")
    m.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    try:
        settings = ScannerSettings()
        configure_logging("scanner", settings.log_level, settings.log_format)
        settings.require("DATABASE_URL", "NATS_URL") if args.command is None else settings.require("DATABASE_URL")
    except (MissingSettingError, ValidationError) as exc:
        print(f"plexsync.scanner: {exc}", file=sys.stderr)
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
