"""Test-side helpers: fresh databases, service processes, authenticated channels."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
import psycopg
from nats.js.errors import NotFoundError
from plexsync.common.clients import service_channel
from plexsync.common.db import libpq_url
from plexsync.devstack.infra import free_port
from plexsync.devstack.process import ChildProcess, start_service
from sqlalchemy.engine import make_url

IDENTITIES = ("auth", "catalog", "scanner", "scheduler", "cli", "admin", "test")


@contextmanager
def fresh_database(base_url: str) -> Iterator[str]:
    """Create an empty database next to base_url's, yield its URL, drop it afterwards."""
    name = f"plexsync_t_{uuid.uuid4().hex[:12]}"
    admin = libpq_url(base_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ServiceStack:
    """Real service processes for one test module, sharing tokens and addresses."""

    database_url: str
    nats_url: str
    log_dir: Path
    tokens: dict[str, str] = field(default_factory=lambda: {who: secrets.token_urlsafe(18) for who in IDENTITIES})
    addresses: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    children: list[ChildProcess] = field(default_factory=list)

    def reserve(self, name: str) -> str:
        """Pick the address a service will listen on (so peers can be configured before it starts)."""
        if name not in self.addresses:
            self.addresses[name] = f"127.0.0.1:{free_port()}"
        return self.addresses[name]

    def env(self, identity: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "PLEXSYNC_SERVICE_TOKENS": ",".join(f"{who}:{tok}" for who, tok in self.tokens.items()),
            "PLEXSYNC_SERVICE_TOKEN": self.tokens[identity],
            "PLEXSYNC_LOG_LEVEL": "INFO",
            "PLEXSYNC_SHUTDOWN_GRACE_SECONDS": "3",
            # Off unless a module tests it: a watcher applying fakeplex's changes on its own would move the Plex
            # request counts and catalog states other modules assert (tests/integration/realtime turns it on).
            "PLEXSYNC_REALTIME_ENABLED": "false",
        }
        for name, address in self.addresses.items():
            env[f"PLEXSYNC_{name.upper()}_ADDR"] = address
        env.update(self.extra_env)
        return env

    def start(self, name: str, **env: str) -> ChildProcess:
        """Start `python -m plexsync.<name>` as a real process and wait for it to be SERVING."""
        address = self.reserve(name)
        port = int(address.rsplit(":", 1)[1])
        child = start_service(name, port, {**self.env(name), **env}, self.log_dir)
        self.children.append(child)
        return child

    def channel(self, name: str, identity: str = "test") -> grpc.aio.Channel:
        """An aio channel to service `name`, authenticated as `identity`."""
        return service_channel(self.addresses[name], self.tokens[identity])

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


async def reset_jetstream(nats_url: str, streams: tuple[str, ...] = ("PLEXSYNC_JOBS", "PLEXSYNC_EVENTS")) -> None:
    """Delete plexsync's streams (and so their consumers): test modules share one NATS, and a module whose services
    consume events or jobs must not be handed another module's (the services create the streams again)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for stream in streams:
            try:
                await js.delete_stream(stream)
            except NotFoundError:
                pass
    finally:
        await nc.close()
