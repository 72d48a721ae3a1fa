"""Input validation, X-Plex headers, error wrapping and the GDM protocol (against a responder on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from plexsync.auth import gdm
from plexsync.auth.plex_api import ClientHeaders, PlexHttp, PlexHttpError, PlexUnauthorizedError, safe_url
from plexsync.auth.service import parse_id, token_problem, validate_server_url
from plexsync.common.errors import InvalidArgumentError


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("http://192.168.1.10:32400", "http://192.168.1.10:32400"),
        ("https://plex.example.com/", "https://plex.example.com"),
        (" http://[::1]:32400/ ", "http://[::1]:32400"),
        ("https://proxy.example.com/plex/", "https://proxy.example.com/plex"),
    ],
)
def test_valid_urls_are_normalised(url: str, normalised: str) -> None:
    assert validate_server_url(url) == normalised


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "required"),
        ("192.168.1.10:32400", "http:// or https://"),
        ("ftp://host", "http:// or https://"),
        ("http://", "no host"),
        ("http://user:pw@host:32400", "user name or password"),
        ("http://host:32400/?X-Plex-Token=abcdef123456", "token field"),
        ("http://host:32400/?a=b", "without query"),
        ("http://host:99999", "invalid port"),
    ],
)
def test_invalid_urls_are_field_violations_that_do_not_echo_the_url(url: str, why: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate_server_url(url)
    [violation] = info.value.violations
    assert violation.field == "url" and why in violation.description
    for secret in ("abcdef123456", "user:pw"):
        assert secret not in str(info.value)


def test_token_and_id_validation() -> None:
    assert token_problem("abc-DEF_123") == ""
    assert "required" in token_problem("")
    assert "spaces" in token_problem("a b")
    assert "longer" in token_problem("x" * 600)
    with pytest.raises(InvalidArgumentError, match="server_id"):
        parse_id("", "server_id", "server")
    with pytest.raises(InvalidArgumentError, match="not a server id"):
        parse_id("nope", "server_id", "server")


def test_client_headers_carry_every_x_plex_field() -> None:
    headers = ClientHeaders("cid-1", device_name="box").as_dict()
    for name in ("Product", "Version", "Client-Identifier", "Platform", "Device", "Device-Name"):
        assert headers[f"X-Plex-{name}"], name
    assert headers["X-Plex-Client-Identifier"] == "cid-1"
    assert headers["X-Plex-Product"] == "plexsync"
    assert "X-Plex-Token" not in headers


def test_safe_url_drops_query_and_userinfo() -> None:
    assert safe_url("http://u:p@host:32400/library?X-Plex-Token=secret") == "http://host:32400/library"


async def test_http_errors_are_wrapped_without_token_or_cause() -> None:
    token = "SECRET-token-value-123456"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/refuse":
            raise httpx.ConnectError(f"refused {request.url} {token}", request=request)
        return httpx.Response(401 if request.url.path == "/denied" else 200, json={})

    http = PlexHttp(ClientHeaders("cid"), timeout=1)
    http._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), headers=http.headers.as_dict())
    try:
        with pytest.raises(PlexHttpError) as info:
            await http.request("GET", "http://plex:32400/refuse", token=token)
        assert token not in str(info.value) and info.value.__suppress_context__
        assert info.value.kind == "connect"
        with pytest.raises(PlexUnauthorizedError):
            await http.request("GET", "http://plex:32400/denied", token=token)
        await http.request("GET", "http://plex:32400/ok", token=token)
    finally:
        await http.aclose()
    for request in seen:
        assert request.headers["X-Plex-Token"] == token
        assert token not in str(request.url)
        assert request.headers["X-Plex-Client-Identifier"] == "cid"


def test_parse_gdm_responses() -> None:
    answer = (
        b"HTTP/1.0 200 OK\r\nContent-Type: plex/media-server\r\nResource-Identifier: abc123\r\n"
        b"Name: Den\r\nPort: 32400\r\nUpdated-At: 1700000000\r\nVersion: 1.41.3\r\n\r\n"
    )
    server = gdm.parse_response(answer, "192.168.1.5")
    assert server == gdm.GdmServer("abc123", "Den", "192.168.1.5", 32400, "1.41.3")
    assert server.uri == "http://192.168.1.5:32400"
    player = answer.replace(b"plex/media-server", b"plex/media-player")
    assert gdm.parse_response(player, "192.168.1.6") is None
    assert gdm.parse_response(b"M-SEARCH * HTTP/1.1\r\n\r\n", "192.168.1.7") is None
    assert gdm.parse_response(answer.replace(b"Port: 32400", b"Port: x"), "1.2.3.4") is None


async def test_gdm_discover_against_a_local_responder() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    loop = asyncio.get_running_loop()
    searches: list[bytes] = []

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            searches.append(data)
            reply = (
                b"HTTP/1.0 200 OK\r\nContent-Type: plex/media-server\r\n"
                b"Resource-Identifier: m1\r\nName: A\r\nPort: 32401\r\n"
            )
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Responder, sock=sock)
    try:
        found = await gdm.discover(["127.0.0.1"], port=port, listen_seconds=0.3)
    finally:
        transport.close()
    assert searches == [gdm.SEARCH]
    assert [(s.machine_identifier, s.uri) for s in found] == [("m1", "http://127.0.0.1:32401")]
