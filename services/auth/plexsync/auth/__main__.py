"""``python -m plexsync.auth``: run the auth service; ``rotate-keys`` re-encrypts stored tokens; ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from plexsync.auth.crypto import KeyConfigError, TokenCipher, TokenDecryptionError
from plexsync.auth.events import NatsServerEvents
from plexsync.auth.migrate import MIGRATIONS
from plexsync.auth.plex_api import ClientHeaders, PlexHttp
from plexsync.auth.repository import Vault, client_identifier, migrate
from plexsync.auth.server import AuthServicer
from plexsync.auth.service import AuthDomain
from plexsync.auth.settings import AuthSettings
from plexsync.common.audit import AuditLog
from plexsync.common.audit_server import add_audit_service
from plexsync.common.config import MissingSettingError
from plexsync.common.db import create_engine, wait_for_database
from plexsync.common.eventbus import EventBus
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.logs import configure_logging
from plexsync.common.migrations import SchemaBehindError
from plexsync.common.outbox import OutboxRelay
from plexsync.common.readiness import database_check
from plexsync.v1 import auth_pb2_grpc
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker

log = logging.getLogger("plexsync.auth")


class StartupError(RuntimeError):
    """Configuration or stored state that prevents the service from starting."""


def load_settings() -> tuple[AuthSettings, TokenCipher]:
    settings = AuthSettings()
    settings.require("DATABASE_URL", "NATS_URL")
    cipher = TokenCipher.from_env_value(settings.token_keys.get_secret_value())
    return settings, cipher


async def serve(settings: AuthSettings, cipher: TokenCipher) -> None:
    engine = create_engine(settings.database_url, schema="auth", application_name="plexsync-auth")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    bus = EventBus(
        settings.nats_url,
        events_stream=settings.events_stream,
        jobs_stream=settings.jobs_stream,
        events_max_age_hours=settings.events_max_age_hours,
    )
    relay = OutboxRelay(engine, bus, schema="auth")
    vault = Vault(cipher)
    servicer = AuthServicer()
    audit = AuditLog(engine, "auth")
    app = ServiceApp("auth", settings, on_denied=audit.record_denied)
    app.add_readiness_check("postgresql", database_check(engine))
    app.add_service("plexsync.v1.AuthService", auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer)
    add_audit_service(app, audit)
    http_holder: list[PlexHttp] = []

    async def ready() -> None:
        await wait_for_database(engine)
        await asyncio.to_thread(MIGRATIONS.prepare, settings.database_url, settings.migrate_on_start)
        count = await vault.verify_all(sessions)
        log.info("token store opened", extra={"tokens": count, "primary_key_id": cipher.primary_key_id})
        identifier = await client_identifier(sessions)
        http = PlexHttp(
            ClientHeaders(identifier, device_name=settings.device_name),
            timeout=settings.plex_timeout_seconds,
            verify=settings.plex_tls(),
        )
        http_holder.append(http)
        await bus.connect()
        relay.start()
        servicer.attach(AuthDomain(settings, sessions, vault, http, NatsServerEvents(relay), audit))

    async def close() -> None:
        for http in http_holder:
            await http.aclose()
        await relay.drain()
        await bus.close()
        await engine.dispose()

    app.on_shutdown(close)
    await app.run(ready)


async def rotate_keys(settings: AuthSettings, cipher: TokenCipher) -> tuple[int, int]:
    engine = create_engine(settings.database_url, schema="auth", application_name="plexsync-auth-rotate")
    try:
        await wait_for_database(engine, attempts=5)
        await migrate(settings.database_url)
        return await Vault(cipher).rotate(async_sessionmaker(engine, expire_on_commit=False))
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plexsync.auth", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gRPC service (the default)")
    sub.add_parser("rotate-keys", help="re-encrypt every stored token under the primary PLEXSYNC_TOKEN_KEYS key")
    sub.add_parser("migrate", help="upgrade the auth database schema and exit")
    args = parser.parse_args(argv)
    try:
        settings, cipher = load_settings()
    except (ValidationError, MissingSettingError, KeyConfigError) as exc:
        print(f"plexsync-auth: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging("auth", settings.log_level, settings.log_format)
    try:
        if args.command == "rotate-keys":
            rotated, total = asyncio.run(rotate_keys(settings, cipher))
            print(
                f"re-encrypted {rotated} of {total} stored token(s) under key id {cipher.primary_key_id!r}; "
                "keys other than the primary can now be removed from PLEXSYNC_TOKEN_KEYS"
            )
            return 0
        if args.command == "migrate":
            asyncio.run(migrate(settings.database_url))
            print("auth schema is up to date")
            return 0
        asyncio.run(serve(settings, cipher))
    except (TokenDecryptionError, SchemaBehindError) as exc:
        log.error("cannot start: %s", exc)
        print(f"plexsync-auth: cannot start: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
