"""HTTP clients for plex.tv (/api/v2) and Plex Media Servers, carrying the X-Plex-* client headers.

Tokens travel only in the ``X-Plex-Token`` header, never in a URL. Every httpx failure is re-raised as a
``PlexHttpError`` whose message names the scheme, host, port and path only (no query, no headers) and whose
cause is suppressed, so neither a log line nor a traceback can carry a token.
"""

from __future__ import annotations

import asyncio
import platform
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import httpx
from opentelemetry import trace
from plexsync.common.logs import redact
from plexsync.common.telemetry import tracer

PRODUCT = "plexsync"
_tracer = tracer("plexsync.auth.plex")


def _version() -> str:
    try:
        return metadata.version("plexsync")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class ClientHeaders:
    """The X-Plex-* headers identifying this installation to plex.tv and servers."""

    client_identifier: str
    device_name: str = PRODUCT
    product: str = PRODUCT
    version: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "X-Plex-Product": self.product,
            "X-Plex-Version": self.version or _version(),
            "X-Plex-Client-Identifier": self.client_identifier,
            "X-Plex-Platform": platform.system() or "Linux",
            "X-Plex-Platform-Version": platform.release() or "",
            "X-Plex-Device": platform.system() or "Linux",
            "X-Plex-Device-Name": self.device_name,
            "X-Plex-Provides": "controller",
            "Accept": "application/json",
        }


class PlexHttpError(Exception):
    """A request to Plex or plex.tv failed. ``status`` is the HTTP status when there was an answer."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "http") -> None:
        super().__init__(redact(message))
        self.status = status
        self.kind = kind


class PlexUnauthorizedError(PlexHttpError):
    """Plex answered 401: the token is not (or no longer) accepted."""


def safe_url(url: httpx.URL | str) -> str:
    """scheme://host:port/path: what may appear in a message (no query string, no userinfo)."""
    u = httpx.URL(str(url))
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"


def _connect_reason(exc: BaseException) -> str:
    """A short, secret-free reason from the exception chain (httpx -> httpcore -> OSError)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for link in chain:
        if isinstance(link, ssl.SSLCertVerificationError):
            # OpenSSL's short reason ("certificate has expired", "Hostname mismatch, ..."): what to fix.
            return f"TLS certificate not trusted ({link.verify_message or link.reason or 'verify failed'})"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return "host name does not resolve"
    text = " ".join(str(link) for link in chain).lower()
    for needle, reason in (
        ("refused", "connection refused"),
        ("name or service not known", "host name does not resolve"),
        ("nodename nor servname", "host name does not resolve"),
        ("temporary failure in name resolution", "host name does not resolve"),
        ("no route", "no route to host"),
        ("unreachable", "network unreachable"),
        ("certificate", "TLS certificate not trusted"),
        ("ssl", "TLS handshake failed"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


class PlexHttp:
    """One httpx client shared by the plex.tv and server APIs."""

    def __init__(self, headers: ClientHeaders, *, timeout: float, verify: bool | ssl.SSLContext = True) -> None:
        self.headers = headers
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            headers=headers.as_dict(), timeout=timeout, verify=verify, follow_redirects=False
        )
        self._verify = verify

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
        time_limit: float | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """Send a request; raise PlexHttpError (or PlexUnauthorizedError on 401) for anything but 2xx."""
        where = safe_url(url)
        headers = {"X-Plex-Token": token} if token else {}
        limit = time_limit if time_limit is not None else self.timeout
        with _tracer.start_as_current_span(
            f"plex {method}",
            kind=trace.SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": where, "plexsync.plex.authenticated": bool(token)},
        ) as span:
            try:
                # httpx limits each phase; the outer limit bounds the whole exchange (slow-drip answers too).
                async with asyncio.timeout(limit):
                    response = await (client or self._client).request(
                        method, url, headers=headers, params=params, timeout=limit
                    )
            except (httpx.TimeoutException, TimeoutError):
                raise PlexHttpError(f"{where} did not answer within {limit:g}s", kind="timeout") from None
            except httpx.ConnectError as exc:
                raise PlexHttpError(f"could not connect to {where}: {_connect_reason(exc)}", kind="connect") from None
            except httpx.InvalidURL:
                raise PlexHttpError(f"{where} is not a valid URL", kind="url") from None
            except httpx.HTTPError as exc:
                raise PlexHttpError(f"{type(exc).__name__} talking to {where}", kind="protocol") from None
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code == 401:
                raise PlexUnauthorizedError(f"{where} answered 401 Unauthorized", status=401)
            if response.status_code >= 400:
                raise PlexHttpError(f"{where} answered HTTP {response.status_code}", status=response.status_code)
            return response

    def probe_client(self, timeout: float) -> httpx.AsyncClient:
        """A short-lived client for one round of probes (fresh connections, so latencies are comparable)."""
        return httpx.AsyncClient(
            headers=self.headers.as_dict(), timeout=timeout, verify=self._verify, follow_redirects=False
        )


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise PlexHttpError(
            f"{safe_url(response.request.url)} did not answer JSON (HTTP {response.status_code})",
            status=response.status_code,
            kind="protocol",
        ) from None


def media_container(response: httpx.Response) -> dict[str, Any]:
    """The MediaContainer of a Plex server JSON answer."""
    body = json_body(response)
    container = body.get("MediaContainer") if isinstance(body, dict) else None
    if not isinstance(container, dict):
        raise PlexHttpError(
            f"{safe_url(response.request.url)} answered, but not like a Plex Media Server (no MediaContainer)",
            status=response.status_code,
            kind="protocol",
        )
    return container


@dataclass(frozen=True)
class PinInfo:
    pin_id: int
    code: str
    expires_at: float
    auth_token: str | None


@dataclass(frozen=True)
class PlexUser:
    plex_id: int | None
    uuid: str
    username: str
    email: str
    title: str
    thumb: str


@dataclass(frozen=True)
class Identity:
    machine_identifier: str
    version: str


def _parse_time(value: Any, default: float) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return default
    return default


class PlexTvApi:
    """plex.tv's /api/v2: PINs, the user, resources."""

    def __init__(self, http: PlexHttp, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    def _pin(self, data: Any) -> PinInfo:
        if not isinstance(data, dict) or "id" not in data or "code" not in data:
            raise PlexHttpError("plex.tv answered a PIN request with an unexpected body", kind="protocol")
        now = time.time()
        expires_in = data.get("expiresIn")
        default_expiry = now + float(expires_in) if isinstance(expires_in, int | float) else now + 900
        token = data.get("authToken")
        return PinInfo(
            pin_id=int(data["id"]),
            code=str(data["code"]),
            expires_at=_parse_time(data.get("expiresAt"), default_expiry),
            auth_token=str(token) if token else None,
        )

    async def create_pin(self) -> PinInfo:
        response = await self.http.request("POST", f"{self.base_url}/api/v2/pins", params={"strong": "true"})
        return self._pin(json_body(response))

    async def get_pin(self, pin_id: int) -> PinInfo | None:
        """The PIN, or None when plex.tv no longer knows it (expired)."""
        try:
            response = await self.http.request("GET", f"{self.base_url}/api/v2/pins/{pin_id}")
        except PlexHttpError as exc:
            if exc.status == 404:
                return None
            raise
        return self._pin(json_body(response))

    async def user(self, token: str) -> PlexUser:
        data = json_body(await self.http.request("GET", f"{self.base_url}/api/v2/user", token=token))
        if not isinstance(data, dict) or not data.get("uuid"):
            raise PlexHttpError("plex.tv answered /api/v2/user with an unexpected body", kind="protocol")
        plex_id = data.get("id")
        return PlexUser(
            plex_id=int(plex_id) if isinstance(plex_id, int) else None,
            uuid=str(data["uuid"]),
            username=str(data.get("username") or ""),
            email=str(data.get("email") or ""),
            title=str(data.get("title") or data.get("friendlyName") or ""),
            thumb=str(data.get("thumb") or ""),
        )

    async def resources(self, token: str) -> list[dict[str, Any]]:
        response = await self.http.request(
            "GET",
            f"{self.base_url}/api/v2/resources",
            token=token,
            params={"includeHttps": "1", "includeRelay": "1"},
        )
        data = json_body(response)
        if not isinstance(data, list):
            raise PlexHttpError("plex.tv answered /api/v2/resources with an unexpected body", kind="protocol")
        return [r for r in data if isinstance(r, dict)]


class PlexServerApi:
    """The few Plex Media Server endpoints auth needs: /identity (no token) and / (token-checked)."""

    def __init__(self, http: PlexHttp) -> None:
        self.http = http

    async def identity(
        self, base_url: str, *, time_limit: float | None = None, client: httpx.AsyncClient | None = None
    ) -> Identity:
        url = f"{base_url.rstrip('/')}/identity"
        response = await self.http.request("GET", url, time_limit=time_limit, client=client)
        container = media_container(response)
        machine = container.get("machineIdentifier")
        if not machine:
            raise PlexHttpError(
                f"{safe_url(response.request.url)} answered, but without a machineIdentifier: not a Plex Media Server",
                kind="protocol",
            )
        return Identity(str(machine), str(container.get("version") or ""))

    async def root(self, base_url: str, token: str, *, time_limit: float | None = None) -> dict[str, Any]:
        """GET / with the token: checks reachability and that the token is accepted (401 otherwise)."""
        url = f"{base_url.rstrip('/')}/"
        return media_container(await self.http.request("GET", url, token=token, time_limit=time_limit))
