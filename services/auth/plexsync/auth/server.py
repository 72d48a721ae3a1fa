"""The AuthService gRPC servicer: validate, call the domain, map to protobuf."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.auth.diagnostics import AuthDiagnostics, TlsStatus, Verdict
from plexsync.auth.models import Account, Connection, Server, ServerSource, ServerStatus
from plexsync.auth.ranking import ConnectionKind
from plexsync.auth.service import AuthDomain
from plexsync.common.errors import UnavailableError
from plexsync.v1 import auth_pb2, auth_pb2_grpc

# grpc ships no type hints; handlers receive a grpc.aio.ServicerContext.
Context: TypeAlias = Any

_KINDS = {
    ConnectionKind.LOCAL: auth_pb2.CONNECTION_KIND_LOCAL,
    ConnectionKind.REMOTE: auth_pb2.CONNECTION_KIND_REMOTE,
    ConnectionKind.RELAY: auth_pb2.CONNECTION_KIND_RELAY,
}
_STATUSES = {
    ServerStatus.UNKNOWN: auth_pb2.SERVER_STATUS_UNSPECIFIED,
    ServerStatus.ONLINE: auth_pb2.SERVER_STATUS_ONLINE,
    ServerStatus.OFFLINE: auth_pb2.SERVER_STATUS_OFFLINE,
    ServerStatus.VANISHED: auth_pb2.SERVER_STATUS_VANISHED,
    ServerStatus.TOKEN_INVALID: auth_pb2.SERVER_STATUS_TOKEN_INVALID,
}
_SOURCES = {
    ServerSource.PLEX_TV: auth_pb2.SERVER_SOURCE_PLEX_TV,
    ServerSource.MANUAL: auth_pb2.SERVER_SOURCE_MANUAL,
    ServerSource.GDM: auth_pb2.SERVER_SOURCE_GDM,
}


_TLS = {
    TlsStatus.NOT_USED: auth_pb2.TLS_STATUS_NOT_USED,
    TlsStatus.VERIFIED: auth_pb2.TLS_STATUS_VERIFIED,
    TlsStatus.INVALID: auth_pb2.TLS_STATUS_INVALID,
    TlsStatus.UNREACHABLE: auth_pb2.TLS_STATUS_UNREACHABLE,
    TlsStatus.NOT_VERIFIED: auth_pb2.TLS_STATUS_NOT_VERIFIED,
}
_VERDICTS = {
    Verdict.ACCEPTED: auth_pb2.TOKEN_VERDICT_ACCEPTED,
    Verdict.REJECTED: auth_pb2.TOKEN_VERDICT_REJECTED,
    Verdict.UNREACHABLE: auth_pb2.TOKEN_VERDICT_UNREACHABLE,
    Verdict.NO_TOKEN: auth_pb2.TOKEN_VERDICT_NO_TOKEN,
}


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _duration_ms(ms: float | None) -> Duration | None:
    if ms is None:
        return None
    duration = Duration()
    duration.FromNanoseconds(int(ms * 1_000_000))
    return duration


def kind_pb(kind: str) -> Any:
    try:
        return _KINDS[ConnectionKind(kind)]
    except ValueError:
        return auth_pb2.CONNECTION_KIND_UNSPECIFIED


def connection_pb(conn: Connection) -> auth_pb2.Connection:
    return auth_pb2.Connection(
        uri=conn.uri,
        protocol=conn.protocol,
        address=conn.address,
        port=conn.port,
        kind=kind_pb(conn.kind),
        ipv6=conn.ipv6,
        reachable=conn.reachable,
        latency=_duration_ms(conn.latency_ms),
        last_check_time=_ts(conn.last_check_at),
        last_error=conn.last_error,
    )


def server_pb(server: Server) -> auth_pb2.Server:
    return auth_pb2.Server(
        id=str(server.id),
        name=server.name,
        machine_identifier=server.machine_identifier,
        version=server.version,
        platform=server.platform,
        owned=server.owned,
        status=_STATUSES.get(ServerStatus(server.status), auth_pb2.SERVER_STATUS_UNSPECIFIED),
        source=_SOURCES.get(ServerSource(server.source), auth_pb2.SERVER_SOURCE_UNSPECIFIED),
        connections=[connection_pb(c) for c in server.connections],
        preferred_uri=server.preferred_uri or "",
        account_id=str(server.account_id) if server.account_id else "",
        last_seen_time=_ts(server.last_seen_at),
        create_time=_ts(server.created_at),
    )


def account_pb(account: Account) -> auth_pb2.Account:
    return auth_pb2.Account(
        id=str(account.id),
        plex_uuid=account.plex_uuid,
        username=account.username,
        email=account.email,
        title=account.title,
        thumb_url=account.thumb_url,
        create_time=_ts(account.created_at),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Thin adapter; the domain is attached once the service is ready."""

    def __init__(self) -> None:
        self._domain: AuthDomain | None = None
        self._diagnostics: AuthDiagnostics | None = None

    def attach(self, domain: AuthDomain) -> None:
        self._domain = domain
        self._diagnostics = AuthDiagnostics(domain)

    @property
    def domain(self) -> AuthDomain:
        if self._domain is None:
            raise UnavailableError("the auth service is still starting; retry in a moment")
        return self._domain

    @property
    def diagnostics(self) -> AuthDiagnostics:
        if self._diagnostics is None:
            raise UnavailableError("the auth service is still starting; retry in a moment")
        return self._diagnostics

    async def StartPinLogin(
        self, request: auth_pb2.StartPinLoginRequest, context: Context
    ) -> auth_pb2.StartPinLoginResponse:
        pin = await self.domain.start_pin_login()
        return auth_pb2.StartPinLoginResponse(
            pin_id=pin.pin_id, code=pin.code, auth_url=pin.auth_url, expire_time=_ts(pin.expire_time)
        )

    async def CompletePinLogin(
        self, request: auth_pb2.CompletePinLoginRequest, context: Context
    ) -> auth_pb2.CompletePinLoginResponse:
        timeout: float | None = None
        if request.HasField("timeout"):
            timeout = request.timeout.ToNanoseconds() / 1e9
        remaining = context.time_remaining()
        if remaining is not None:
            budget = max(0.1, remaining - 0.5)
            timeout = budget if timeout is None or timeout <= 0 else min(timeout, budget)
        result = await self.domain.complete_pin_login(request.pin_id, timeout, request.discover_servers)
        return auth_pb2.CompletePinLoginResponse(
            account=account_pb(result.account), servers=[server_pb(s) for s in result.servers]
        )

    async def CancelPinLogin(
        self, request: auth_pb2.CancelPinLoginRequest, context: Context
    ) -> auth_pb2.CancelPinLoginResponse:
        await self.domain.cancel_pin_login(request.pin_id)
        return auth_pb2.CancelPinLoginResponse()

    async def AddServer(self, request: auth_pb2.AddServerRequest, context: Context) -> auth_pb2.AddServerResponse:
        server = await self.domain.add_server(request.url, request.token, request.name)
        return auth_pb2.AddServerResponse(server=server_pb(server))

    async def DiscoverServers(
        self, request: auth_pb2.DiscoverServersRequest, context: Context
    ) -> auth_pb2.DiscoverServersResponse:
        result = await self.domain.discover_servers(request.account_id, request.use_gdm)
        return auth_pb2.DiscoverServersResponse(
            servers=[server_pb(s) for s in result.servers],
            added=result.added,
            updated=result.updated,
            vanished=result.vanished,
        )

    async def ListServers(self, request: auth_pb2.ListServersRequest, context: Context) -> auth_pb2.ListServersResponse:
        servers, next_token = await self.domain.list_servers(request.page_size, request.page_token)
        return auth_pb2.ListServersResponse(servers=[server_pb(s) for s in servers], next_page_token=next_token)

    async def GetServer(self, request: auth_pb2.GetServerRequest, context: Context) -> auth_pb2.GetServerResponse:
        return auth_pb2.GetServerResponse(server=server_pb(await self.domain.get_server(request.server_id)))

    async def RemoveServer(
        self, request: auth_pb2.RemoveServerRequest, context: Context
    ) -> auth_pb2.RemoveServerResponse:
        await self.domain.remove_server(request.server_id)
        return auth_pb2.RemoveServerResponse()

    async def CheckServer(self, request: auth_pb2.CheckServerRequest, context: Context) -> auth_pb2.CheckServerResponse:
        checked = await self.diagnostics.check_server(request.server_id)
        result = checked.result
        return auth_pb2.CheckServerResponse(
            server=server_pb(result.server),
            chosen=connection_pb(result.chosen) if result.chosen is not None else None,
            probes=[connection_pb(c) for c in result.probes],
            tls=[auth_pb2.ConnectionTls(uri=t.uri, status=_TLS[t.status], error=t.error) for t in checked.tls],
        )

    async def CheckToken(self, request: auth_pb2.CheckTokenRequest, context: Context) -> auth_pb2.CheckTokenResponse:
        report = await self.diagnostics.check_tokens(request.server_id)
        return auth_pb2.CheckTokenResponse(
            accounts=[
                auth_pb2.AccountTokenCheck(
                    account_id=a.account_id, username=a.username, plex_tv=_VERDICTS[a.plex_tv], error=a.error
                )
                for a in report.accounts
            ],
            servers=[
                auth_pb2.ServerTokenCheck(
                    server_id=s.server_id,
                    name=s.name,
                    plex_tv=_VERDICTS[s.plex_tv],
                    server=_VERDICTS[s.server],
                    uri=s.uri,
                    error=s.error,
                )
                for s in report.servers
            ],
        )

    async def GetServerCredentials(
        self, request: auth_pb2.GetServerCredentialsRequest, context: Context
    ) -> auth_pb2.GetServerCredentialsResponse:
        creds = await self.domain.get_credentials(request.server_id, request.recheck)
        return auth_pb2.GetServerCredentialsResponse(
            base_url=creds.base_url,
            token=creds.token,
            client_identifier=creds.client_identifier,
            machine_identifier=creds.machine_identifier,
            connection_kind=kind_pb(creds.kind),
        )
