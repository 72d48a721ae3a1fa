"""`python -m plexsync.catalog`: serve CatalogService. `python -m plexsync.catalog migrate upgrade head` (or
`downgrade REV`) runs the schema migrations and exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from plexsync.catalog.changes import ChangeHub, ChangeLog
from plexsync.catalog.migrate import MIGRATIONS, migrate
from plexsync.catalog.repository import Repository
from plexsync.catalog.server import CatalogServicer
from plexsync.catalog.settings import CatalogSettings
from plexsync.catalog.store import Store
from plexsync.catalog.writer import Writer
from plexsync.common.audit import AuditLog
from plexsync.common.audit_server import add_audit_service
from plexsync.common.config import MissingSettingError
from plexsync.common.db import libpq_url
from plexsync.common.eventbus import EventBus
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.logs import configure_logging
from plexsync.common.migrations import SchemaBehindError
from plexsync.common.outbox import OutboxRelay
from plexsync.common.readiness import database_check
from plexsync.v1 import catalog_pb2_grpc

log = logging.getLogger("plexsync.catalog")

# Methods only some callers may use (the others are open to every authenticated caller).


async def serve(settings: CatalogSettings) -> None:
    store = Store(settings.database_url, pool_size=settings.db_pool_size)
    # Audit events are the catalog's only NATS traffic: rows in its outbox, relayed while NATS is reachable (its
    # reads and writes never wait for NATS). Without NATS_URL the audit log is kept but not published.
    bus = (
        EventBus(
            settings.nats_url,
            events_stream=settings.events_stream,
            jobs_stream=settings.jobs_stream,
            events_max_age_hours=settings.events_max_age_hours,
        )
        if settings.nats_url
        else None
    )
    relay = OutboxRelay(store.engine, bus, schema="catalog") if bus is not None else None
    audit = AuditLog(store.engine, "catalog", publish=relay is not None)
    repository = Repository(store, audit)
    changelog = ChangeLog(store, page_size=settings.changes_page_size, retention_hours=settings.changes_retention_hours)
    hub = ChangeHub(libpq_url(settings.database_url), poll_seconds=settings.changes_poll_seconds)
    writer = Writer(
        store,
        changelog,
        max_batch_items=settings.max_batch_items,
        workers=settings.ingest_workers,
        pipeline=settings.write_pipeline,
        pipeline_min_items=settings.pipeline_min_items,
        row_lock_timeout_ms=settings.row_lock_timeout_ms,
    )
    servicer = CatalogServicer(repository, writer, changelog, hub, etag_chunk=settings.etag_chunk_size)
    app = ServiceApp("catalog", settings, on_denied=audit.record_denied)
    app.add_readiness_check("postgresql", database_check(store.engine))
    app.add_service("plexsync.v1.CatalogService", catalog_pb2_grpc.add_CatalogServiceServicer_to_server, servicer)
    add_audit_service(app, audit)
    app.on_stop_requested(hub.close)  # WatchChanges streams end at once instead of holding up the drain
    app.on_shutdown(store.dispose)
    app.on_shutdown(writer.close)
    app.on_shutdown(hub.stop)
    pruner: list[asyncio.Task[None]] = []

    async def stop_pruner() -> None:
        for task in pruner:
            task.cancel()
        await asyncio.gather(*pruner, return_exceptions=True)

    app.on_shutdown(stop_pruner)
    connecting: list[asyncio.Task[None]] = []

    async def connect_bus() -> None:
        assert bus is not None
        try:
            await bus.connect(attempts=1_000_000)
        except Exception:
            log.exception("could not connect to NATS; audit events wait in the outbox")

    async def close_bus() -> None:
        for task in connecting:
            task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        if relay is not None and bus is not None:
            await relay.drain()
            await bus.close()

    app.on_shutdown(close_bus)

    async def ready() -> None:
        await store.wait()
        migrate_on_start = settings.migrate and settings.migrate_on_start
        await asyncio.to_thread(MIGRATIONS.prepare, settings.database_url, migrate_on_start)
        await changelog.start()
        await hub.start()
        await writer.start()
        pruner.append(asyncio.create_task(changelog.run_pruner(settings.changes_prune_seconds), name="prune"))
        if relay is not None:
            connecting.append(asyncio.create_task(connect_bus(), name="nats-connect"))
            relay.start()
        log.info("catalog database ready")

    await app.run(ready)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m plexsync.catalog", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    mig = sub.add_parser("migrate", help="run catalog schema migrations and exit")
    mig.add_argument("action", choices=["upgrade", "downgrade"], nargs="?", default="upgrade")
    mig.add_argument("revision", nargs="?", default="head", help="target revision (head, base, 0001, ...)")
    args = parser.parse_args(argv)
    settings = CatalogSettings()
    configure_logging("catalog", settings.log_level, settings.log_format)
    try:
        settings.require("DATABASE_URL")
    except MissingSettingError as exc:
        log.error(str(exc))
        return 2
    if args.command == "migrate":
        if args.action == "downgrade" and args.revision == "head":
            parser.error("downgrade needs a target revision, e.g. `migrate downgrade base`")
        migrate(settings.database_url, args.action, args.revision)
        return 0
    try:
        asyncio.run(serve(settings))
    except SchemaBehindError as exc:
        log.error("cannot start: %s", exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
