"""Diagnostics behind `plexsync servers check` and `plexsync token check`: read-only, no gRPC.

A connection's TLS verdict comes from a handshake of its own (with the same trust as every Plex request), so the
exact verification error can be shown; a probe only says the connection failed. Token checks ask plex.tv and the
servers and change nothing: whoever fetches credentials next still records what it finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from plexsync.auth.models import Account, Server, Token
from plexsync.auth.plex_api import PlexHttpError, PlexUnauthorizedError
from plexsync.auth.ranking import ConnectionKind, Probe, rank_key
from plexsync.auth.service import AuthDomain, CheckResult
from sqlalchemy import select


class TlsStatus(StrEnum):
    NOT_USED = "not_used"
    VERIFIED = "verified"
    INVALID = "invalid"
    UNREACHABLE = "unreachable"
    NOT_VERIFIED = "not_verified"


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    NO_TOKEN = "no_token"


@dataclass(frozen=True)
class TlsCheck:
    uri: str
    status: TlsStatus
    error: str = ""


@dataclass(frozen=True)
class ServerCheck:
    result: CheckResult
    tls: list[TlsCheck]  # in the order of result.probes


@dataclass(frozen=True)
class AccountTokenCheck:
    account_id: str
    username: str
    plex_tv: Verdict
    error: str = ""


@dataclass(frozen=True)
class ServerTokenCheck:
    server_id: str
    name: str
    plex_tv: Verdict
    server: Verdict
    uri: str = ""
    error: str = ""


@dataclass(frozen=True)
class TokenReport:
    accounts: list[AccountTokenCheck]
    servers: list[ServerTokenCheck]


async def check_tls(uri: str, context: ssl.SSLContext | None, time_limit: float) -> TlsCheck:
    """Handshake with an https connection and say whether its certificate verifies for the connection's host."""
    parts = urlsplit(uri)
    if parts.scheme != "https":
        return TlsCheck(uri, TlsStatus.NOT_USED)
    if context is None:
        return TlsCheck(uri, TlsStatus.NOT_VERIFIED, "certificate verification is off (PLEXSYNC_PLEX_VERIFY_TLS)")
    host = parts.hostname or ""
    try:
        async with asyncio.timeout(time_limit):
            _, writer = await asyncio.open_connection(host, parts.port or 443, ssl=context, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        return TlsCheck(uri, TlsStatus.INVALID, f"certificate verify failed: {exc.verify_message or exc.reason}")
    except ssl.SSLError as exc:
        return TlsCheck(uri, TlsStatus.INVALID, f"TLS handshake failed: {exc.reason or type(exc).__name__}")
    except TimeoutError:
        return TlsCheck(uri, TlsStatus.UNREACHABLE, f"no TLS handshake within {time_limit:g}s")
    except OSError as exc:
        return TlsCheck(uri, TlsStatus.UNREACHABLE, exc.strerror or type(exc).__name__)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return TlsCheck(uri, TlsStatus.VERIFIED)


class AuthDiagnostics:
    """Server and token checks over an `AuthDomain`'s database, vault and Plex clients."""

    def __init__(self, domain: AuthDomain) -> None:
        self.domain = domain
        self._context: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        """The trust every Plex request uses (built once: loading the CA store is not free)."""
        if self._context is None:
            settings = self.domain.settings
            verify = settings.plex_tls()
            if isinstance(verify, bool):
                return None
            self._context = verify
        return self._context

    async def check_server(self, server_id: str) -> ServerCheck:
        """The domain's check (probes, choice, recorded as usual) with a TLS verdict for each connection."""
        server = await self.domain.get_server(server_id)
        timeout = self.domain.settings.probe_timeout_seconds
        context = self._tls_context()
        result, tls = await asyncio.gather(
            self.domain.check_server(server_id),
            asyncio.gather(*(check_tls(c.uri, context, timeout) for c in server.connections)),
        )
        by_uri = {t.uri: t for t in tls}
        unchecked = "not checked: the connection was added meanwhile"
        return ServerCheck(
            result, [by_uri.get(p.uri) or TlsCheck(p.uri, TlsStatus.UNREACHABLE, unchecked) for p in result.probes]
        )

    # ------------------------------------------------------------------ tokens
    async def check_tokens(self, server_id: str) -> TokenReport:
        chosen = await self.domain.get_server(server_id) if server_id else None
        async with self.domain.sessions() as session:
            if chosen is not None:
                server = await session.get(Server, chosen.id)
                servers = [server] if server is not None else []
                account = await session.get(Account, chosen.account_id) if chosen.account_id else None
                accounts = [account] if account is not None else []
            else:
                servers = list((await session.scalars(select(Server).order_by(Server.created_at, Server.id))).all())
                accounts = list((await session.scalars(select(Account).order_by(Account.created_at))).all())
            ids = {t for t in [*(a.token_id for a in accounts), *(s.token_id for s in servers)] if t is not None}
            rows = (await session.scalars(select(Token).where(Token.id.in_(ids)))).all() if ids else []
            tokens: dict[uuid.UUID, str] = {row.id: self.domain.vault.open(row) for row in rows}
        checked_accounts = await asyncio.gather(
            *(self._check_account(a, tokens.get(a.token_id) if a.token_id else None) for a in accounts)
        )
        checked_servers = await asyncio.gather(
            *(self._check_server_token(s, tokens.get(s.token_id) if s.token_id else None) for s in servers)
        )
        return TokenReport(list(checked_accounts), list(checked_servers))

    async def _plex_tv(self, token: str | None) -> tuple[Verdict, str]:
        if token is None:
            return Verdict.NO_TOKEN, ""
        try:
            await self.domain.plextv.user(token)
        except PlexUnauthorizedError:
            return Verdict.REJECTED, "plex.tv answered 401 Unauthorized"
        except PlexHttpError as exc:
            return Verdict.UNREACHABLE, f"plex.tv: {exc}"
        return Verdict.ACCEPTED, ""

    async def _check_account(self, account: Account, token: str | None) -> AccountTokenCheck:
        verdict, error = await self._plex_tv(token)
        return AccountTokenCheck(str(account.id), account.username or account.title, verdict, error)

    async def _check_server_token(self, server: Server, token: str | None) -> ServerTokenCheck:
        (plex_tv, tv_error), (verdict, uri, error) = await asyncio.gather(
            self._plex_tv(token), self._ask_server(server, token)
        )
        return ServerTokenCheck(
            str(server.id), server.name, plex_tv, verdict, uri, "; ".join(e for e in (tv_error, error) if e)
        )

    async def _ask_server(self, server: Server, token: str | None) -> tuple[Verdict, str, str]:
        """GET / with the token on the remembered connection first, then the others best first."""
        if token is None:
            return Verdict.NO_TOKEN, "", ""
        known = sorted(
            server.connections,
            key=lambda c: (c.uri != server.preferred_uri, rank_key(Probe(c.uri, ConnectionKind(c.kind), c.protocol,
                                                                         c.reachable, c.latency_ms))),
        )  # fmt: skip
        failures: list[str] = []
        for conn in known:
            try:
                await self.domain.pms.root(conn.uri, token, time_limit=self.domain.settings.probe_timeout_seconds)
            except PlexUnauthorizedError:
                return Verdict.REJECTED, conn.uri, "the server answered 401 Unauthorized"
            except PlexHttpError as exc:
                if exc.status is not None:
                    return Verdict.UNREACHABLE, conn.uri, str(exc)
                failures.append(str(exc))
                continue
            return Verdict.ACCEPTED, conn.uri, ""
        if not known:
            return Verdict.UNREACHABLE, "", "the server has no known connections"
        return Verdict.UNREACHABLE, "", "no connection answered: " + "; ".join(failures)
