"""Test-side helpers: fresh databases, service processes, authenticated channels."""

from __future__ import annotations

import base64
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
from plexsync.common.tls import (
    PLAIN_TCP_ENV,
    CertPair,
    DevCertificateAuthority,
    channel_credentials_from_files,
    tls_env,
)
from plexsync.devstack.infra import free_port
from plexsync.devstack.process import ChildProcess, start_service
from sqlalchemy.engine import make_url

# Each identity's role (plexsync.common.access): `test` is the tests' all-purpose caller, so it holds the scanner's
# internal write path and the admin's calls at once; `auth` and `catalog` call no peer and may only read.
IDENTITIES = {
    "auth": "reader",
    "catalog": "reader",
    "scanner": "scanner",
    "scheduler": "scheduler",
    "cli": "admin",
    "admin": "admin",
    "reader": "reader",
    "test": "admin+scanner",
}


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
    # None: plain TCP, said explicitly (PLEXSYNC_GRPC_INSECURE=true); `use_tls` switches every process to TLS.
    ca: DevCertificateAuthority | None = None
    client_auth: bool = False
    certs: dict[str, CertPair] = field(default_factory=dict)

    def use_tls(self, directory: Path, *, client_auth: bool = False) -> DevCertificateAuthority:
        """Serve and call over TLS with certificates from a dev CA in `directory` (mTLS with `client_auth`)."""
        self.ca = DevCertificateAuthority(directory)
        self.client_auth = client_auth
        return self.ca

    def cert(self, identity: str) -> CertPair:
        """`identity`'s certificate (issued on first use): served by a service, presented as a client."""
        assert self.ca is not None, "use_tls first"
        if identity not in self.certs:
            self.certs[identity] = self.ca.issue(identity)
        return self.certs[identity]

    def tls_env(self, identity: str) -> dict[str, str]:
        if self.ca is None:
            return dict(PLAIN_TCP_ENV)
        return tls_env(self.ca.ca_file, self.cert(identity), client_auth=self.client_auth)

    def reserve(self, name: str) -> str:
        """Pick the address a service will listen on (so peers can be configured before it starts)."""
        if name not in self.addresses:
            self.addresses[name] = f"127.0.0.1:{free_port()}"
        return self.addresses[name]

    def env(self, identity: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "PLEXSYNC_SERVICE_TOKENS": ",".join(
                f"{who}@{IDENTITIES.get(who, 'reader')}:{tok}" for who, tok in self.tokens.items()
            ),
            "PLEXSYNC_SERVICE_TOKEN": self.tokens[identity],
            "PLEXSYNC_LOG_LEVEL": "INFO",
            "PLEXSYNC_SHUTDOWN_GRACE_SECONDS": "3",
            # Off unless a module tests it: a watcher applying fakeplex's changes on its own would move the Plex
            # request counts and catalog states other modules assert (tests/integration/realtime turns it on).
            "PLEXSYNC_REALTIME_ENABLED": "false",
            **self.tls_env(identity),
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

    def start_plex_services(self, plex_url: str, scanner_env: dict[str, str] | None = None) -> None:
        """catalog, auth (plex.tv at `plex_url`, no GDM) and scanner, with a fresh token key: what a scan needs."""
        self.extra_env["PLEXSYNC_TOKEN_KEYS"] = "test1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        for name in ("catalog", "auth", "scanner"):
            self.reserve(name)
        self.start("catalog")
        self.start("auth", PLEXSYNC_PLEX_TV_URL=plex_url, PLEXSYNC_GDM_ENABLED="false")
        self.start("scanner", **(scanner_env or {}))

    def channel(self, name: str, identity: str = "test") -> grpc.aio.Channel:
        """An aio channel to service `name`, authenticated as `identity`."""
        credentials = None
        if self.ca is not None:
            pair = self.cert(identity)
            credentials = channel_credentials_from_files(str(self.ca.ca_file), str(pair.cert_file), str(pair.key_file))
        return service_channel(self.addresses[name], self.tokens[identity], credentials)

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
