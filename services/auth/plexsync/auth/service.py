"""The auth domain: PIN login, manual servers, discovery, connection choice and credentials.

Pure Python (no gRPC, no NATS): errors are plexsync.common.errors, events go through a ``ServerEvents`` sink.
Tokens are opened from the vault only where a request needs them and never appear in a message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import idna
from plexsync.auth import gdm
from plexsync.auth.models import Account, Connection, PinLogin, PinStatus, Server, ServerSource, ServerStatus, Token
from plexsync.auth.plex_api import (
    PlexHttp,
    PlexHttpError,
    PlexServerApi,
    PlexTvApi,
    PlexUnauthorizedError,
    safe_url,
)
from plexsync.auth.ranking import ConnectionKind, Probe, kind_for_address, ranked
from plexsync.auth.repository import Vault
from plexsync.auth.settings import AuthSettings
from plexsync.common import pagination
from plexsync.common.audit import NO_AUDIT, AuditRecorder, Outcome
from plexsync.common.errors import (
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PlexsyncError,
    UnavailableError,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)
MAX_TOKEN_LENGTH = 512
MAX_URL_LENGTH = 2048


class ServerEvents(Protocol):
    """Where server state changes are announced (NATS in the service, a list in tests)."""

    async def online(self, server: Server, uri: str, latency_ms: float) -> None: ...
    async def offline(self, server: Server, error: str) -> None: ...
    async def token_invalid(self, server: Server, reason: str) -> None: ...


@dataclass(frozen=True)
class PinStart:
    pin_id: int
    code: str
    auth_url: str
    expire_time: datetime


@dataclass
class LoginResult:
    account: Account
    servers: list[Server] = field(default_factory=list)


@dataclass
class DiscoverResult:
    servers: list[Server]
    added: int = 0
    updated: int = 0
    vanished: int = 0


@dataclass
class CheckResult:
    server: Server
    chosen: Connection | None
    probes: list[Connection]


@dataclass(frozen=True)
class Credentials:
    base_url: str
    token: str
    client_identifier: str
    machine_identifier: str
    kind: str


def now() -> datetime:
    return datetime.now(UTC)


def parse_id(value: str, field_name: str, what: str) -> uuid.UUID:
    if not value:
        raise InvalidArgumentError.single(field_name, f"is required: the {what} id (see List{what.title()}s)")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgumentError.single(
            field_name, f"is not a {what} id: use the id field returned by List{what.title()}s"
        ) from None


def validate_server_url(url: str) -> str:
    """The normalised base URL, or INVALID_ARGUMENT on ``url``. The URL itself is never echoed back."""
    url = url.strip()
    if not url:
        raise InvalidArgumentError.single("url", "is required, e.g. http://192.168.1.10:32400")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgumentError.single("url", f"is longer than {MAX_URL_LENGTH} characters; give the base URL")
    if not url.isprintable():
        raise InvalidArgumentError.single("url", "must not contain control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" of an IPv6 address
        raise InvalidArgumentError.single("url", "is not a valid URL, e.g. http://192.168.1.10:32400") from None
    problem = ""
    if parts.scheme not in ("http", "https"):
        problem = "must start with http:// or https://, e.g. http://192.168.1.10:32400"
    elif not parts.hostname:
        problem = "has no host name, e.g. http://192.168.1.10:32400"
    elif parts.username or parts.password:
        problem = "must not contain a user name or password"
    elif "token" in parts.query.lower():
        problem = "must not carry the token: put it in the token field (it is sent only as a header)"
    elif parts.query or parts.fragment:
        problem = "must be the server's base URL, without query string or fragment"
    else:
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 0 < port < 65536:
            problem = "has an invalid port; Plex usually listens on 32400"
    if problem:
        raise InvalidArgumentError.single("url", problem)
    base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    if not _host_is_valid(parts.hostname or ""):
        raise InvalidArgumentError.single("url", "has an invalid host name, e.g. http://192.168.1.10:32400")
    return base_url


def _host_is_valid(host: str) -> bool:
    """What httpx and the resolver would refuse later, with an exception of their own, is refused here."""
    if host.startswith("[") or ":" in host:
        return True  # an IPv6 literal; urlsplit has checked its brackets
    if len(host) > 253 or any(not 0 < len(label) <= 63 for label in host.rstrip(".").split(".")):
        return False
    if host.isascii() and "xn--" not in host.lower():
        return all(c.isalnum() or c in "-_." for c in host)
    try:
        idna.encode(host, uts46=True)
    except UnicodeError:  # idna.IDNAError is one
        return False
    return True


def token_problem(token: str) -> str:
    if not token:
        return "is required: the server's X-Plex-Token"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"is longer than {MAX_TOKEN_LENGTH} characters; paste only the X-Plex-Token value"
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        return "must be printable ASCII without spaces; paste only the X-Plex-Token value"
    return ""


def _connection_from_resource(data: dict[str, Any]) -> Connection | None:
    uri = data.get("uri")
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        return None
    if data.get("relay"):
        kind = ConnectionKind.RELAY
    elif data.get("local"):
        kind = ConnectionKind.LOCAL
    else:
        kind = ConnectionKind.REMOTE
    port = data.get("port")
    return Connection(
        uri=uri.rstrip("/"),
        protocol=str(data.get("protocol") or urlsplit(uri).scheme),
        address=str(data.get("address") or urlsplit(uri).hostname or ""),
        port=int(port) if isinstance(port, int) else (urlsplit(uri).port or 0),
        kind=kind.value,
        ipv6=bool(data.get("IPv6")),
        source=ServerSource.PLEX_TV.value,
    )


def _provides_server(resource: dict[str, Any]) -> bool:
    return "server" in [p.strip() for p in str(resource.get("provides") or "").split(",")]


def _probe_of(conn: Connection) -> Probe:
    return Probe(
        uri=conn.uri,
        kind=ConnectionKind(conn.kind),
        protocol=conn.protocol,
        reachable=conn.reachable,
        latency_ms=conn.latency_ms,
        error=conn.last_error,
    )


class AuthDomain:
    """Everything the AuthService does, independent of transport."""

    def __init__(
        self,
        settings: AuthSettings,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        http: PlexHttp,
        events: ServerEvents,
        audit: AuditRecorder = NO_AUDIT,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.sessions = sessions
        self.vault = vault
        self.http = http
        self.plextv = PlexTvApi(http, settings.plex_tv_url)
        self.pms = PlexServerApi(http)
        self.events = events
        self.client_identifier = http.headers.client_identifier
        self._pin_cancel: dict[int, asyncio.Event] = {}

    # ------------------------------------------------------------------ PIN login
    def auth_url(self, code: str) -> str:
        query = urlencode(
            {"clientID": self.client_identifier, "code": code, "context[device][product]": "plexsync"},
            quote_via=quote,
            safe="[]",
        )
        return f"{self.settings.plex_app_url}/auth#?{query}"

    def _plextv_unavailable(self, exc: PlexHttpError) -> UnavailableError:
        return UnavailableError(
            f"plex.tv could not be reached ({exc}); check this host's network access to "
            f"{self.settings.plex_tv_url} (PLEXSYNC_PLEX_TV_URL) and try again"
        )

    async def start_pin_login(self) -> PinStart:
        try:
            pin = await self.plextv.create_pin()
        except PlexHttpError as exc:
            raise self._plextv_unavailable(exc) from None
        expires = datetime.fromtimestamp(pin.expires_at, UTC)
        async with self.sessions() as session, session.begin():
            # plex.tv owns PIN ids; a reused id means the old PIN is dead, so the new one replaces it.
            await session.merge(PinLogin(pin_id=pin.pin_id, code=pin.code, expires_at=expires,
                                         status=PinStatus.PENDING.value, account_id=None))  # fmt: skip
        # The PIN id is not logged: with the (non-secret) client identifier it fetches the token once approved.
        log.info("PIN login started", extra={"expires_at": expires.isoformat()})
        return PinStart(pin.pin_id, pin.code, self.auth_url(pin.code), expires)

    async def _pin_row(self, pin_id: int) -> PinLogin:
        if pin_id <= 0:
            raise InvalidArgumentError.single("pin_id", "is required: the pin_id returned by StartPinLogin")
        async with self.sessions() as session:
            row = await session.get(PinLogin, pin_id)
        if row is None:
            raise NotFoundError(
                "PIN login (start one with StartPinLogin)", str(pin_id), resource_type="plexsync.v1.PinLogin"
            )
        return row

    async def _set_pin_status(self, pin_id: int, status: PinStatus, account_id: uuid.UUID | None = None) -> None:
        async with self.sessions() as session, session.begin():
            row = await session.get(PinLogin, pin_id)
            if row is not None:
                row.status = status.value
                if account_id is not None:
                    row.account_id = account_id

    @staticmethod
    def _expired() -> FailedPreconditionError:
        return FailedPreconditionError("the PIN has expired before it was approved; start a new login (StartPinLogin)")

    @staticmethod
    def _cancelled() -> CancelledError:
        return CancelledError("the PIN login was cancelled; start a new login (StartPinLogin) to try again")

    async def complete_pin_login(self, pin_id: int, wait_seconds: float | None, discover: bool) -> LoginResult:
        if wait_seconds is not None and wait_seconds < 0:
            raise InvalidArgumentError.single("timeout", "must not be negative")
        row = await self._pin_row(pin_id)
        if row.status == PinStatus.CANCELLED:
            raise self._cancelled()
        if row.status == PinStatus.EXPIRED:
            raise self._expired()
        if row.status == PinStatus.APPROVED and row.account_id is not None:
            async with self.sessions() as session:
                account = await session.get(Account, row.account_id)
            if account is not None:
                servers = (await self.discover_servers(str(account.id), False)).servers if discover else []
                return LoginResult(account, servers)
        start = time.monotonic()
        lifetime = max(0.0, row.expires_at.timestamp() - time.time())
        deadline = start + (min(wait_seconds, lifetime + 5) if wait_seconds else lifetime + 5)
        cancel = self._pin_cancel.setdefault(pin_id, asyncio.Event())
        failures = 0
        token: str | None = None
        try:
            while True:
                if cancel.is_set() or await self._pin_status(pin_id) == PinStatus.CANCELLED:
                    raise self._cancelled()
                try:
                    pin = await self.plextv.get_pin(pin_id)
                except PlexHttpError as exc:
                    failures += 1
                    log.warning("PIN poll failed", extra={"error": str(exc), "attempt": failures})
                    if failures >= 3:
                        raise self._plextv_unavailable(exc) from None
                else:
                    failures = 0
                    if pin is None:
                        await self._set_pin_status(pin_id, PinStatus.EXPIRED)
                        raise self._expired()
                    if pin.auth_token:
                        token = pin.auth_token
                        break
                if time.time() >= row.expires_at.timestamp():
                    await self._set_pin_status(pin_id, PinStatus.EXPIRED)
                    raise self._expired()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceededError(
                        "the PIN was not approved in time; open auth_url to approve it and call CompletePinLogin "
                        "again (the PIN stays valid until its expire_time)"
                    )
                try:
                    await asyncio.wait_for(cancel.wait(), min(self.settings.pin_poll_interval_seconds, remaining))
                except TimeoutError:
                    pass
        finally:
            self._pin_cancel.pop(pin_id, None)
        assert token is not None
        account = await self._store_account(token)  # audited in its transaction (login.completed, token.*)
        await self._set_pin_status(pin_id, PinStatus.APPROVED, account.id)
        log.info("PIN login approved", extra={"account_id": str(account.id)})
        servers = (await self.discover_servers(str(account.id), False)).servers if discover else []
        return LoginResult(account, servers)

    async def _pin_status(self, pin_id: int) -> str | None:
        async with self.sessions() as session:
            return await session.scalar(select(PinLogin.status).where(PinLogin.pin_id == pin_id))

    async def _store_account(self, token: str) -> Account:
        """The account the token belongs to, stored with its token; audited ("login.completed", and "token.stored"
        or "token.replaced") in the same transaction."""
        try:
            user = await self.plextv.user(token)
        except PlexUnauthorizedError:
            raise FailedPreconditionError(
                "plex.tv rejected the token it just issued for this PIN; start a new login (StartPinLogin)"
            ) from None
        except PlexHttpError as exc:
            raise self._plextv_unavailable(exc) from None
        async with self.sessions() as session, session.begin():
            account = await session.scalar(select(Account).where(Account.plex_uuid == user.uuid))
            if account is None:
                account = Account(plex_uuid=user.uuid)
                session.add(account)
            account.plex_id = user.plex_id
            account.username = user.username
            account.email = user.email
            account.title = user.title
            account.thumb_url = user.thumb
            row = await session.get(Token, account.token_id) if account.token_id else None
            stored = "stored" if row is None else "replaced"
            if row is None:
                row = self.vault.store(session, token)
                await session.flush()
                account.token_id = row.id
            else:
                self.vault.reseal(row, token)
            await session.flush()  # the new account's id, for its record
            await self.audit.record(
                "login.completed", "account", str(account.id), after=_account_audit(account), session=session
            )
            await self.audit.record(f"token.{stored}", "account", str(account.id), session=session)
        return account

    async def cancel_pin_login(self, pin_id: int) -> None:
        row = await self._pin_row(pin_id)
        if row.status == PinStatus.APPROVED:
            raise FailedPreconditionError("the PIN login has already completed; there is nothing to cancel")
        if row.status == PinStatus.PENDING:
            await self._set_pin_status(pin_id, PinStatus.CANCELLED)
        event = self._pin_cancel.get(pin_id)
        if event is not None:
            event.set()
        log.info("PIN login cancelled")

    # ------------------------------------------------------------------ manual servers
    async def add_server(self, url: str, token: str, name: str) -> Server:
        violations: list[FieldViolation] = []
        base_url = ""
        try:
            base_url = validate_server_url(url)
        except InvalidArgumentError as exc:
            violations.extend(exc.violations)
        problem = token_problem(token)
        if problem:
            violations.append(FieldViolation("token", problem))
        if violations:
            raise InvalidArgumentError(violations)
        where = safe_url(base_url)
        started = time.perf_counter()
        try:
            identity = await self.pms.identity(base_url)
        except PlexHttpError as exc:
            if exc.kind in ("connect", "timeout"):
                raise UnavailableError(
                    f"no Plex Media Server answered at {where} ({exc}); check the URL (scheme, host, port - "
                    "usually 32400), that the server is running, and that this host can reach it (firewall, "
                    "container network)"
                ) from None
            raise InvalidArgumentError.single(
                "url", f"answered, but not like a Plex Media Server's /identity ({exc}); check the URL"
            ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            root = await self.pms.root(base_url, token)
        except PlexUnauthorizedError:
            raise InvalidArgumentError.single(
                "token",
                f"the server at {where} rejected it (401 Unauthorized); use a current X-Plex-Token for this server",
            ) from None
        except PlexHttpError as exc:
            raise UnavailableError(f"the server at {where} failed the token check ({exc}); try again") from None
        host = urlsplit(base_url).hostname or ""
        async with self.sessions() as session, session.begin():
            server = await self._server_by_machine(session, identity.machine_identifier)
            previous = server.status if server else None
            before = _server_audit(server) if server else None
            if server is None:
                server = Server(machine_identifier=identity.machine_identifier, source=ServerSource.MANUAL.value)
                server.connections = []
                session.add(server)
            server.name = name.strip() or str(root.get("friendlyName") or server.name or host)
            server.version = identity.version or str(root.get("version") or server.version)
            server.platform = str(root.get("platform") or server.platform)
            server.owned = server.owned or bool(root.get("myPlexSigninState") == "ok")
            token_change = await self._set_token(session, server, token)
            conn = next((c for c in server.connections if c.uri == base_url), None)
            if conn is None:
                parts = urlsplit(base_url)
                conn = Connection(
                    uri=base_url,
                    protocol=parts.scheme,
                    address=host,
                    port=parts.port or (443 if parts.scheme == "https" else 80),
                    kind=kind_for_address(host).value,
                    ipv6=":" in host,
                    source=ServerSource.MANUAL.value,
                )
                server.connections.append(conn)
            conn.reachable, conn.latency_ms, conn.last_error, conn.last_check_at = True, latency_ms, "", now()
            server.status, server.status_reason = ServerStatus.ONLINE.value, ""
            server.preferred_uri = base_url
            server.last_seen_at = now()
            await session.flush()  # a new server's id, and the state the record reports
            await self.audit.record(
                "server.add", "server", str(server.id), before=before, after=_server_audit(server), session=session
            )
            if token_change:
                await self.audit.record(f"token.{token_change}", "server", str(server.id), session=session)
        log.info("server added", extra={"server_id": str(server.id), "machine_identifier": server.machine_identifier})
        if previous != ServerStatus.ONLINE:
            await self._announce(self.events.online(server, base_url, latency_ms))
        return await self.get_server(str(server.id))

    async def _set_token(self, session: AsyncSession, server: Server, token: str) -> str:
        """Store or replace the server's token; "stored", "replaced" or "" (unchanged), for the audit log."""
        row = await session.get(Token, server.token_id) if server.token_id else None
        if row is None:
            row = self.vault.store(session, token)
            await session.flush()
            server.token_id = row.id
            return "stored"
        if row.invalid_at is not None or self.vault.open(row) != token:
            self.vault.reseal(row, token)
            return "replaced"
        return ""

    @staticmethod
    async def _server_by_machine(session: AsyncSession, machine_identifier: str) -> Server | None:
        return await session.scalar(select(Server).where(Server.machine_identifier == machine_identifier))

    # ------------------------------------------------------------------ discovery
    async def _resolve_account(self, session: AsyncSession, account_id: str) -> Account:
        if account_id:
            account = await session.get(Account, parse_id(account_id, "account_id", "account"))
            if account is None:
                raise NotFoundError("account", account_id, resource_type="plexsync.v1.Account")
            return account
        accounts = (await session.scalars(select(Account).limit(2))).all()
        if not accounts:
            raise FailedPreconditionError(
                "no plex.tv account is logged in: log in with StartPinLogin / CompletePinLogin first, or add "
                "servers by URL and token with AddServer"
            )
        if len(accounts) > 1:
            raise InvalidArgumentError.single("account_id", "is required when more than one account is logged in")
        return accounts[0]

    async def discover_servers(self, account_id: str, use_gdm: bool) -> DiscoverResult:
        if use_gdm and not self.settings.gdm_enabled:
            raise FailedPreconditionError("GDM discovery is disabled on this service (PLEXSYNC_GDM_ENABLED=false)")
        account: Account | None = None
        resources: list[dict[str, Any]] = []
        async with self.sessions() as session:
            gdm_only = not account_id and use_gdm and await session.scalar(select(Account.id).limit(1)) is None
            if not gdm_only:
                account = await self._resolve_account(session, account_id)
                token_row = await session.get(Token, account.token_id) if account.token_id else None
                if token_row is None or token_row.invalid_at is not None:
                    raise FailedPreconditionError(
                        "plex.tv no longer accepts this account's token; log in again (StartPinLogin)"
                    )
                account_token, account_token_id = self.vault.open(token_row), token_row.id
        if account is not None:
            try:
                resources = await self.plextv.resources(account_token)
            except PlexUnauthorizedError:
                async with self.sessions() as session, session.begin():
                    row = await session.get(Token, account_token_id)
                    if row is not None:
                        row.invalid_at = now()
                    await self.audit.record(
                        "token.invalidated",
                        "account",
                        str(account.id),
                        reason="plex.tv answered 401 for the token",
                        session=session,
                    )
                raise FailedPreconditionError(
                    "plex.tv rejected this account's token (401); log in again (StartPinLogin)"
                ) from None
            except PlexHttpError as exc:
                raise self._plextv_unavailable(exc) from None
        found = []
        if use_gdm:
            found = await gdm.discover(
                self.settings.gdm_targets(),
                port=self.settings.gdm_port,
                listen_seconds=self.settings.gdm_timeout_seconds,
            )
        result = DiscoverResult(servers=[])
        touched: list[uuid.UUID] = []
        token_changes: list[tuple[str, uuid.UUID]] = []
        async with self.sessions() as session, session.begin():
            seen: set[str] = set()
            for resource in resources:
                if not _provides_server(resource) or not resource.get("clientIdentifier"):
                    continue
                machine = str(resource["clientIdentifier"])
                seen.add(machine)
                server = await self._server_by_machine(session, machine)
                if server is None:
                    server = Server(machine_identifier=machine, source=ServerSource.PLEX_TV.value)
                    server.connections = []
                    session.add(server)
                    result.added += 1
                else:
                    result.updated += 1
                server.source = ServerSource.PLEX_TV.value
                server.account_id = account.id if account else None
                server.name = str(resource.get("name") or server.name)
                server.version = str(resource.get("productVersion") or server.version)
                server.platform = str(resource.get("platform") or server.platform)
                server.owned = bool(resource.get("owned"))
                server.last_seen_at = now()
                if server.status in (ServerStatus.VANISHED, ServerStatus.TOKEN_INVALID):
                    server.status, server.status_reason = ServerStatus.UNKNOWN.value, ""
                change = await self._set_token(session, server, str(resource.get("accessToken") or account_token))
                self._merge_connections(server, resource.get("connections") or [])
                await session.flush()
                touched.append(server.id)
                if change:
                    token_changes.append((change, server.id))
            stale: Sequence[Server] = (
                (
                    await session.scalars(
                        select(Server).where(
                            Server.account_id == account.id,
                            Server.source == ServerSource.PLEX_TV.value,
                            Server.machine_identifier.not_in(seen or {""}),
                        )
                    )
                ).all()
                if account is not None
                else []
            )
            for server in stale:
                if server.status != ServerStatus.VANISHED:
                    server.status = ServerStatus.VANISHED.value
                    server.status_reason = "plex.tv no longer lists this server for the account"
                    result.vanished += 1
                touched.append(server.id)
            for answer in found:
                server = await self._server_by_machine(session, answer.machine_identifier)
                if server is None:
                    server = Server(
                        machine_identifier=answer.machine_identifier,
                        source=ServerSource.GDM.value,
                        name=answer.name,
                        version=answer.version,
                    )
                    server.connections = []
                    session.add(server)
                    result.added += 1
                elif server.id not in touched:
                    result.updated += 1
                server.last_seen_at = now()
                if not any(c.uri == answer.uri for c in server.connections):
                    server.connections.append(
                        Connection(
                            uri=answer.uri,
                            protocol=answer.protocol,
                            address=answer.address,
                            port=answer.port,
                            kind=ConnectionKind.LOCAL.value,
                            ipv6=":" in answer.address,
                            source=ServerSource.GDM.value,
                        )
                    )
                await session.flush()
                if server.id not in touched:
                    touched.append(server.id)
            await session.flush()
            # The record is written with the change: the touched servers as this transaction leaves them.
            audited = [s for s in [await session.get(Server, i) for i in touched] if s is not None]
            await self.audit.record(
                "servers.discover",
                "account",
                str(account.id) if account else "",
                after={
                    "added": result.added,
                    "updated": result.updated,
                    "vanished": result.vanished,
                    "gdm": use_gdm,
                    "servers": [_server_audit(s) for s in audited],
                },
                session=session,
            )
            for change, server_id in token_changes:
                await self.audit.record(f"token.{change}", "server", str(server_id), session=session)
        result.servers = await self._servers_by_ids(touched)
        log.info(
            "servers discovered",
            extra={
                "account_id": str(account.id) if account else "",
                "added": result.added,
                "updated": result.updated,
                "vanished": result.vanished,
                "gdm_answers": len(found),
            },
        )
        return result

    @staticmethod
    def _merge_connections(server: Server, listed: Sequence[Any]) -> None:
        fresh = {c.uri: c for c in (_connection_from_resource(d) for d in listed if isinstance(d, dict)) if c}
        for conn in list(server.connections):
            if conn.source == ServerSource.PLEX_TV and conn.uri not in fresh:
                server.connections.remove(conn)
        existing = {c.uri: c for c in server.connections}
        for uri, new in fresh.items():
            old = existing.get(uri)
            if old is None:
                server.connections.append(new)
            else:
                old.protocol, old.address, old.port, old.kind, old.ipv6 = (
                    new.protocol,
                    new.address,
                    new.port,
                    new.kind,
                    new.ipv6,
                )
        if server.preferred_uri and server.preferred_uri not in {c.uri for c in server.connections}:
            server.preferred_uri = None

    async def _servers_by_ids(self, ids: list[uuid.UUID]) -> list[Server]:
        if not ids:
            return []
        async with self.sessions() as session:
            rows = {s.id: s for s in (await session.scalars(select(Server).where(Server.id.in_(ids)))).all()}
        return [rows[i] for i in ids if i in rows]

    # ------------------------------------------------------------------ servers
    async def get_server(self, server_id: str) -> Server:
        ident = parse_id(server_id, "server_id", "server")
        async with self.sessions() as session:
            server = await session.get(Server, ident)
        if server is None:
            raise NotFoundError("server", server_id, resource_type="plexsync.v1.Server")
        return server

    async def list_servers(self, page_size: int, page_token: str) -> tuple[list[Server], str]:
        size = pagination.page_size(page_size)
        fingerprint = pagination.filters_fingerprint("servers")
        last = pagination.decode_token(page_token, fingerprint)
        query = select(Server).order_by(Server.created_at, Server.id).limit(size + 1)
        if last is not None:
            try:
                after_time, after_id = datetime.fromisoformat(str(last[0])), uuid.UUID(str(last[1]))
            except (ValueError, IndexError):
                raise InvalidArgumentError.single("page_token", "is not a token returned by ListServers") from None
            query = query.where(
                (Server.created_at > after_time) | ((Server.created_at == after_time) & (Server.id > after_id))
            )
        async with self.sessions() as session:
            rows = list((await session.scalars(query)).all())
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            tail = rows[-1]
            next_token = pagination.encode_token([tail.created_at.isoformat(), str(tail.id)], fingerprint)
        return rows, next_token

    async def remove_server(self, server_id: str) -> None:
        ident = parse_id(server_id, "server_id", "server")
        async with self.sessions() as session, session.begin():
            server = await session.get(Server, ident)
            if server is None:
                raise NotFoundError("server", server_id, resource_type="plexsync.v1.Server")
            token_id = server.token_id
            before = _server_audit(server)
            await session.delete(server)
            await session.flush()
            if token_id is not None:
                token = await session.get(Token, token_id)
                if token is not None:
                    await session.delete(token)
            await self.audit.record("server.remove", "server", server_id, before=before, session=session)
            if token_id is not None:
                await self.audit.record("token.deleted", "server", server_id, session=session)
        log.info("server removed", extra={"server_id": server_id})

    # ------------------------------------------------------------------ connection choice
    async def _load_for_use(self, server_id: str) -> tuple[Server, str | None]:
        ident = parse_id(server_id, "server_id", "server")
        async with self.sessions() as session:
            server = await session.get(Server, ident)
            if server is None:
                raise NotFoundError("server", server_id, resource_type="plexsync.v1.Server")
            row = await session.get(Token, server.token_id) if server.token_id else None
            token = self.vault.open(row) if row is not None else None
        return server, token

    async def _probe(self, client: Any, conn: Connection, machine: str) -> Probe:
        started = time.perf_counter()
        base = Probe(conn.uri, ConnectionKind(conn.kind), conn.protocol, reachable=False)
        try:
            identity = await self.pms.identity(conn.uri, client=client, time_limit=self.settings.probe_timeout_seconds)
        except PlexHttpError as exc:
            return Probe(base.uri, base.kind, base.protocol, False, None, str(exc))
        latency = (time.perf_counter() - started) * 1000
        if identity.machine_identifier != machine:
            return Probe(base.uri, base.kind, base.protocol, False, latency, "answered as a different Plex server")
        return Probe(base.uri, base.kind, base.protocol, True, latency, "")

    async def _probe_all(self, server: Server) -> list[Probe]:
        timeout = self.settings.probe_timeout_seconds
        async with self.http.probe_client(timeout) as client:
            return list(
                await asyncio.gather(*(self._probe(client, c, server.machine_identifier) for c in server.connections))
            )

    async def check_server(self, server_id: str) -> CheckResult:
        server, token = await self._load_for_use(server_id)
        if not server.connections:
            raise FailedPreconditionError(
                f"server {server.name!r} has no known connections; run DiscoverServers or re-add it with AddServer"
            )
        probes = await self._probe_all(server)
        chosen: Probe | None = None
        token_rejected = False
        candidates = [p for p in ranked(probes) if p.reachable]
        for candidate in candidates:
            if token is None:
                chosen = candidate
                break
            try:
                await self.pms.root(candidate.uri, token, time_limit=self.settings.probe_timeout_seconds)
            except PlexUnauthorizedError:
                token_rejected = True
                chosen = candidate
                break
            except PlexHttpError as exc:
                probes = [
                    Probe(p.uri, p.kind, p.protocol, False, p.latency_ms, f"token check failed: {exc}")
                    if p.uri == candidate.uri
                    else p
                    for p in probes
                ]
                continue
            chosen = candidate
            break
        return await self._record_check(server.id, probes, chosen, token_rejected)

    async def _record_check(
        self, server_id: uuid.UUID, probes: list[Probe], chosen: Probe | None, token_rejected: bool
    ) -> CheckResult:
        checked_at = now()
        by_uri = {p.uri: p for p in probes}
        async with self.sessions() as session, session.begin():
            server = await session.get(Server, server_id)
            if server is None:
                raise NotFoundError("server", str(server_id), resource_type="plexsync.v1.Server")
            previous_status, previous_uri = server.status, server.preferred_uri
            for conn in server.connections:
                probe = by_uri.get(conn.uri)
                if probe is not None:
                    conn.reachable, conn.latency_ms = probe.reachable, probe.latency_ms
                    conn.last_error, conn.last_check_at = probe.error, checked_at
            if token_rejected:
                server.status = ServerStatus.TOKEN_INVALID.value
                server.status_reason = "Plex answered 401 for the stored token; log in again or re-add the server"
                if server.token_id is not None:
                    token = await session.get(Token, server.token_id)
                    if token is not None and token.invalid_at is None:
                        token.invalid_at = checked_at
            elif chosen is not None:
                if server.status != ServerStatus.VANISHED:  # only discovery brings a vanished server back
                    server.status, server.status_reason = ServerStatus.ONLINE.value, ""
                server.preferred_uri = chosen.uri
                server.last_seen_at = checked_at
            elif server.status != ServerStatus.VANISHED:
                server.status = ServerStatus.OFFLINE.value
                server.status_reason = f"none of {len(probes)} connection(s) answered"
            if token_rejected and previous_status != ServerStatus.TOKEN_INVALID:
                await self.audit.record(
                    "token.invalidated",
                    "server",
                    str(server.id),
                    reason="Plex answered 401 Unauthorized for the token",
                    session=session,
                )
        conn_by_uri = {c.uri: c for c in server.connections}
        chosen_conn = conn_by_uri.get(chosen.uri) if chosen is not None and not token_rejected else None
        log.info(
            "server checked",
            extra={
                "server_id": str(server.id),
                "status": server.status,
                "chosen_uri": chosen_conn.uri if chosen_conn else "",
                "chosen_kind": chosen_conn.kind if chosen_conn else "",
                "latency_ms": round(chosen.latency_ms or 0.0, 2) if chosen else None,
                "reachable": sum(p.reachable for p in probes),
                "probes": len(probes),
            },
        )
        if token_rejected and previous_status != ServerStatus.TOKEN_INVALID:
            await self._announce(self.events.token_invalid(server, "Plex answered 401 Unauthorized for the token"))
        elif (
            server.status == ServerStatus.ONLINE
            and chosen_conn is not None
            and (previous_status != ServerStatus.ONLINE or previous_uri != chosen_conn.uri)
        ):
            await self._announce(self.events.online(server, chosen_conn.uri, chosen_conn.latency_ms or 0.0))
        elif server.status == ServerStatus.OFFLINE and previous_status != ServerStatus.OFFLINE:
            await self._announce(self.events.offline(server, self._unreachable_summary(probes)))
        ordered = [conn_by_uri[p.uri] for p in ranked(probes) if p.uri in conn_by_uri]
        return CheckResult(server, chosen_conn, ordered)

    @staticmethod
    def _unreachable_summary(probes: list[Probe]) -> str:
        return "; ".join(f"{p.uri}: {p.error or 'unreachable'}" for p in probes)

    async def _announce(self, publishing: Any) -> None:
        try:
            await publishing
        except Exception as exc:
            log.warning("server event not published", extra={"error": type(exc).__name__})

    async def _mark_token_invalid(self, server: Server) -> None:
        await self._record_check(server.id, [], None, token_rejected=True)

    def _token_invalid_error(self, server: Server) -> FailedPreconditionError:
        return FailedPreconditionError(
            f"Plex rejected the stored token for server {server.name!r} ({server.id}); log in again "
            "(StartPinLogin, CompletePinLogin with discover_servers) or re-add the server with AddServer and a "
            "current token"
        )

    async def get_credentials(self, server_id: str, recheck: bool) -> Credentials:
        """The server's credentials for a scan; every fetch is audited, a refused one with its reason."""
        try:
            return await self._credentials(server_id, recheck)
        except PlexsyncError as exc:
            # Domain error messages never carry a secret (plexsync.common.errors).
            await self.audit.record(
                "credentials.fetch", "server", server_id, outcome=Outcome.FAILURE, reason=f"{type(exc).__name__}: {exc}"
            )
            raise

    async def _credentials(self, server_id: str, recheck: bool) -> Credentials:
        server, token = await self._load_for_use(server_id)
        if server.status == ServerStatus.TOKEN_INVALID:
            raise self._token_invalid_error(server)
        if token is None:
            raise FailedPreconditionError(
                f"server {server.name!r} ({server.id}) has no token (found by GDM only); log in with plex.tv "
                "(StartPinLogin) or add it with AddServer and its X-Plex-Token"
            )
        if server.preferred_uri and not recheck and server.status == ServerStatus.ONLINE:
            try:
                await self.pms.root(server.preferred_uri, token, time_limit=self.settings.probe_timeout_seconds)
            except PlexUnauthorizedError:
                await self._mark_token_invalid(server)
                raise self._token_invalid_error(server) from None
            except PlexHttpError as exc:
                log.info(
                    "remembered connection failed; choosing again",
                    extra={"server_id": str(server.id), "uri": server.preferred_uri, "error": str(exc)},
                )
            else:
                kind = next((c.kind for c in server.connections if c.uri == server.preferred_uri), "")
                return await self._handed_out(
                    server.id,
                    Credentials(server.preferred_uri, token, self.client_identifier, server.machine_identifier, kind),
                )
        result = await self.check_server(server_id)
        if result.server.status == ServerStatus.TOKEN_INVALID:
            raise self._token_invalid_error(result.server)
        if result.chosen is None:
            raise UnavailableError(
                f"server {server.name!r} ({server.id}) is unreachable on all {len(result.probes)} known "
                f"connection(s) [{self._unreachable_summary([_probe_of(c) for c in result.probes])}]; check that "
                "Plex is running and reachable from this host, or run DiscoverServers if its addresses changed"
            )
        return await self._handed_out(
            server.id,
            Credentials(
                result.chosen.uri, token, self.client_identifier, server.machine_identifier, result.chosen.kind
            ),
        )

    async def _handed_out(self, server_id: uuid.UUID, creds: Credentials) -> Credentials:
        """Audit a credential fetch before the token leaves (who fetched which server's; never the token)."""
        await self.audit.record(
            "credentials.fetch",
            "server",
            str(server_id),
            after={
                "machine_identifier": creds.machine_identifier,
                "base_url": safe_url(creds.base_url),
                "connection_kind": creds.kind,
            },
        )
        return creds


def _server_audit(server: Server) -> dict[str, Any]:
    """What the audit log keeps of a server: identity and addresses, never its token."""
    return {
        "id": str(server.id),
        "name": server.name,
        "machine_identifier": server.machine_identifier,
        "source": server.source,
        "status": server.status,
        "preferred_uri": safe_url(server.preferred_uri) if server.preferred_uri else "",
    }


def _account_audit(account: Account) -> dict[str, Any]:
    return {"id": str(account.id), "plex_uuid": account.plex_uuid, "username": account.username}
