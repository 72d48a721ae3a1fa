"""Auth as a real process against fakeplex as a real process: PIN login, discovery (plex.tv + GDM), connection
choice and failover (local -> remote HTTPS -> remote HTTP -> relay -> nothing), credentials and who may read them,
401 handling, vanished servers, the X-Plex-* headers on every request, and no token in any URL, log line or event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration
from plexsync.common.grpc_errors import field_violations
from plexsync.v1 import auth_pb2, auth_pb2_grpc, events_pb2

from tests.integration.auth.conftest import (
    EventLog,
    FakePlexProcess,
    GdmResponder,
    assert_client_headers,
    auth_env,
    key_spec,
)
from tests.support.otlp import OtlpReceiver, otlp_receiver
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def auth(
    service_stack: ServiceStack,
    fakeplex: FakePlexProcess,
    gdm_responder: GdmResponder,
    primary_key: tuple[str, str],
    otlp: OtlpReceiver,
) -> Iterator[ServiceStack]:
    # Spans and log records go to a real OTLP receiver so the no-leak test can search them too.
    service_stack.extra_env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
        }
    )
    service_stack.start("auth", **auth_env(fakeplex, key_spec(primary_key), gdm_responder.port))
    yield service_stack
    # Stop auth while the receiver still runs: a process flushing to a dead collector waits for its timeout.
    for child in [c for c in service_stack.children if c.name == "auth"]:
        child.stop()
        service_stack.children.remove(child)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cli(auth: ServiceStack) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    channel = auth.channel("auth", "cli")
    yield auth_pb2_grpc.AuthServiceStub(channel)
    await channel.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scanner(auth: ServiceStack) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    channel = auth.channel("auth", "scanner")
    yield auth_pb2_grpc.AuthServiceStub(channel)
    await channel.close()


async def login(
    cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess, *, discover: bool = True
) -> auth_pb2.CompletePinLoginResponse:
    pin = await cli.StartPinLogin(auth_pb2.StartPinLoginRequest())
    completing = asyncio.ensure_future(
        cli.CompletePinLogin(auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id, discover_servers=discover))
    )
    await asyncio.sleep(0.3)
    async with fakeplex.control() as control:
        await control.approve_pin(pin.pin_id)
    return await asyncio.wait_for(completing, 10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server_id(cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess) -> str:
    reply = await login(cli, fakeplex)
    [server] = [s for s in reply.servers if s.machine_identifier == fakeplex.machine_identifier]
    return server.id


async def test_start_pin_login_returns_code_auth_url_and_expiry(
    cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess
) -> None:
    reply = await cli.StartPinLogin(auth_pb2.StartPinLoginRequest())
    assert reply.pin_id > 0
    assert len(reply.code) == 25, "a strong PIN"
    assert reply.auth_url.startswith("https://app.plex.test/auth#?clientID=")
    fragment = parse_qs(urlsplit(reply.auth_url).fragment.lstrip("?"))
    assert fragment["code"] == [reply.code]
    assert fragment["context[device][product]"] == ["plexsync"]
    assert fragment["clientID"][0].startswith("plexsync-")
    assert reply.expire_time.seconds > 0
    async with fakeplex.control() as control:
        pins = {p["id"]: p for p in await control.pins()}
    assert pins[reply.pin_id]["clientIdentifier"] == fragment["clientID"][0], "X-Plex-Client-Identifier sent"


async def test_pin_approved_logs_in_and_discovers(
    cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess
) -> None:
    reply = await login(cli, fakeplex)
    assert reply.account.username == "fakeplex-owner"
    assert reply.account.plex_uuid
    [server] = [s for s in reply.servers if s.machine_identifier == fakeplex.machine_identifier]
    assert server.source == auth_pb2.SERVER_SOURCE_PLEX_TV
    assert server.account_id == reply.account.id
    kinds = {c.uri: c.kind for c in server.connections}
    listeners = fakeplex.listeners
    assert kinds[listeners["local"]] == auth_pb2.CONNECTION_KIND_LOCAL
    assert kinds[listeners["remote"]] == auth_pb2.CONNECTION_KIND_REMOTE
    assert kinds[listeners["relay"]] == auth_pb2.CONNECTION_KIND_RELAY
    assert kinds[listeners["https"]] == auth_pb2.CONNECTION_KIND_REMOTE
    protocols = {c.uri: c.protocol for c in server.connections}
    assert protocols[listeners["https"]] == "https" and protocols[listeners["remote"]] == "http"
    assert fakeplex.control_url not in kinds, "plex.tv's own address is not a server connection"
    player_ids = {s.machine_identifier for s in reply.servers}
    assert "fakeplex-player-1" not in player_ids, "only resources that provide 'server'"


async def test_pin_expired_says_start_a_new_login(
    cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess
) -> None:
    pin = await cli.StartPinLogin(auth_pb2.StartPinLoginRequest())
    async with fakeplex.control() as control:
        await control.expire_pin(pin.pin_id)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await cli.CompletePinLogin(auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "start a new login" in (info.value.details() or "")


async def test_pin_cancelled_while_waiting(cli: auth_pb2_grpc.AuthServiceStub) -> None:
    pin = await cli.StartPinLogin(auth_pb2.StartPinLoginRequest())
    waiting = asyncio.ensure_future(
        cli.CompletePinLogin(auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id, timeout=Duration(seconds=20)))
    )
    await asyncio.sleep(0.3)
    await cli.CancelPinLogin(auth_pb2.CancelPinLoginRequest(pin_id=pin.pin_id))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(waiting, 5)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert "start a new login" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await cli.CompletePinLogin(auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id))
    assert again.value.code() == grpc.StatusCode.CANCELLED


async def test_pin_not_approved_within_timeout(cli: auth_pb2_grpc.AuthServiceStub) -> None:
    pin = await cli.StartPinLogin(auth_pb2.StartPinLoginRequest())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cli.CompletePinLogin(
            auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id, timeout=Duration(nanos=300_000_000))
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "CompletePinLogin again" in (info.value.details() or "")


async def test_pin_bad_and_unknown_ids(cli: auth_pb2_grpc.AuthServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cli.CompletePinLogin(auth_pb2.CompletePinLoginRequest(pin_id=0))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(info.value)] == ["pin_id"]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await cli.CompletePinLogin(auth_pb2.CompletePinLoginRequest(pin_id=424242))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "StartPinLogin" in (unknown.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as cancel_unknown:
        await cli.CancelPinLogin(auth_pb2.CancelPinLoginRequest(pin_id=424242))
    assert cancel_unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_discover_with_gdm_finds_lan_servers(
    cli: auth_pb2_grpc.AuthServiceStub,
    scanner: auth_pb2_grpc.AuthServiceStub,
    fakeplex: FakePlexProcess,
    gdm_responder: GdmResponder,
    server_id: str,
) -> None:
    local_port = urlsplit(fakeplex.local_url).port
    gdm_responder.answers[:] = [
        {"Resource-Identifier": fakeplex.machine_identifier, "Name": "FakePlex 7", "Port": str(local_port)},
        {"Resource-Identifier": "gdm-only-0001", "Name": "Attic", "Port": "32400", "Version": "1.40.0"},
    ]
    try:
        reply = await cli.DiscoverServers(auth_pb2.DiscoverServersRequest(use_gdm=True))
    finally:
        gdm_responder.answers.clear()
    assert any(s.startswith(b"M-SEARCH * HTTP/1.1") for s in gdm_responder.searches)
    by_machine = {s.machine_identifier: s for s in reply.servers}
    assert by_machine[fakeplex.machine_identifier].id == server_id
    attic = by_machine["gdm-only-0001"]
    assert attic.source == auth_pb2.SERVER_SOURCE_GDM and attic.name == "Attic"
    assert [(c.uri, c.kind) for c in attic.connections] == [("http://127.0.0.1:32400", auth_pb2.CONNECTION_KIND_LOCAL)]
    assert reply.added == 1 and reply.vanished == 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=attic.id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "AddServer" in (info.value.details() or "")


async def test_check_server_prefers_local_and_announces_online(
    cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess, server_id: str, server_events: EventLog
) -> None:
    reply = await cli.CheckServer(auth_pb2.CheckServerRequest(server_id=server_id))
    assert reply.chosen.uri == fakeplex.local_url
    assert reply.chosen.kind == auth_pb2.CONNECTION_KIND_LOCAL
    assert reply.chosen.reachable and reply.chosen.latency.ToNanoseconds() > 0
    listeners = fakeplex.listeners
    assert [p.uri for p in reply.probes] == [listeners[n] for n in ("local", "https", "remote", "relay")], "ranked"
    assert all(p.reachable for p in reply.probes), "the HTTPS connection is trusted through PLEXSYNC_PLEX_CA_BUNDLE"
    assert reply.server.status == auth_pb2.SERVER_STATUS_ONLINE
    assert reply.server.preferred_uri == fakeplex.local_url
    msg = await server_events.wait_for(f"server.{server_id}.online")
    event = events_pb2.ServerEvent.FromString(msg.data)
    assert event.server_id == server_id and event.online.uri == fakeplex.local_url


async def test_credentials_only_for_the_scanner(
    auth: ServiceStack,
    cli: auth_pb2_grpc.AuthServiceStub,
    scanner: auth_pb2_grpc.AuthServiceStub,
    fakeplex: FakePlexProcess,
    server_id: str,
) -> None:
    creds = await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server_id))
    assert creds.token == fakeplex.token
    assert creds.base_url == fakeplex.local_url
    assert creds.machine_identifier == fakeplex.machine_identifier
    assert creds.client_identifier.startswith("plexsync-")
    assert creds.connection_kind == auth_pb2.CONNECTION_KIND_LOCAL
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await cli.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server_id))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with grpc.aio.insecure_channel(auth.addresses["auth"]) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await auth_pb2_grpc.AuthServiceStub(anonymous).GetServerCredentials(
                auth_pb2.GetServerCredentialsRequest(server_id=server_id)
            )
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_failover_local_then_https_then_http_then_relay_then_nothing(
    cli: auth_pb2_grpc.AuthServiceStub,
    scanner: auth_pb2_grpc.AuthServiceStub,
    fakeplex: FakePlexProcess,
    server_id: str,
    server_events: EventLog,
) -> None:
    listeners = fakeplex.listeners
    remote, relay = auth_pb2.CONNECTION_KIND_REMOTE, auth_pb2.CONNECTION_KIND_RELAY
    preference = [
        ("local", auth_pb2.CONNECTION_KIND_LOCAL),
        ("https", remote),  # remote over HTTPS beats remote over plain HTTP
        ("remote", remote),
        ("relay", relay),
    ]
    await cli.CheckServer(auth_pb2.CheckServerRequest(server_id=server_id))
    # plex.tv and the control API live on fakeplex's control listener, so every connection can go down.
    async with fakeplex.control() as control:
        try:
            for name, kind in preference:
                creds = await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server_id))
                assert (creds.base_url, creds.connection_kind) == (listeners[name], kind), f"{name} is the best left"
                server = (await cli.GetServer(auth_pb2.GetServerRequest(server_id=server_id))).server
                assert server.preferred_uri == listeners[name]
                assert server.status == auth_pb2.SERVER_STATUS_ONLINE
                await control.set_connection(name, "down")
            down = next(c for c in server.connections if c.uri == listeners["remote"])
            assert not down.reachable and "connection refused" in down.last_error

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server_id))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            details = info.value.details() or ""
            assert "unreachable on all 4 known connection(s)" in details and "check that Plex is running" in details
            assert all(listeners[name] in details for name, _ in preference)
            assert fakeplex.token not in details
            check = await cli.CheckServer(auth_pb2.CheckServerRequest(server_id=server_id))
            assert not check.HasField("chosen") and check.server.status == auth_pb2.SERVER_STATUS_OFFLINE
            assert all(not p.reachable and p.last_error for p in check.probes)
            msg = await server_events.wait_for(f"server.{server_id}.offline")
            assert listeners["relay"] in events_pb2.ServerEvent.FromString(msg.data).offline.error

            for name in ("https", "remote", "relay"):
                await control.set_connection(name, "up")
            await control.set_connection("local", "slow", delay_ms=2500)
            check = await cli.CheckServer(auth_pb2.CheckServerRequest(server_id=server_id))
            assert check.chosen.uri == listeners["https"], "a local probe slower than the timeout loses"
            assert check.server.status == auth_pb2.SERVER_STATUS_ONLINE, "back online"
            slow = next(p for p in check.probes if p.uri == listeners["local"])
            assert not slow.reachable and "did not answer within" in slow.last_error
        finally:
            for name, _ in preference:
                await control.set_connection(name, "up")
    creds = await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server_id, recheck=True))
    assert creds.base_url == fakeplex.local_url, "recheck goes back to the preferred local connection"


async def test_revoked_token_marks_server_and_publishes_event(
    cli: auth_pb2_grpc.AuthServiceStub,
    scanner: auth_pb2_grpc.AuthServiceStub,
    fakeplex: FakePlexProcess,
    server_id: str,
    server_events: EventLog,
) -> None:
    async with fakeplex.control() as control:
        await control.revoke_token(fakeplex.token)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server_id))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "log in again" in (info.value.details() or "")
            server = (await cli.GetServer(auth_pb2.GetServerRequest(server_id=server_id))).server
            assert server.status == auth_pb2.SERVER_STATUS_TOKEN_INVALID
            msg = await server_events.wait_for(f"server.{server_id}.token_invalid")
            event = events_pb2.ServerEvent.FromString(msg.data)
            assert event.WhichOneof("payload") == "token_invalid" and event.token_invalid.reason
            with pytest.raises(grpc.aio.AioRpcError) as still:
                await scanner.GetServerCredentials(
                    auth_pb2.GetServerCredentialsRequest(server_id=server_id, recheck=True)
                )
            assert still.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            await control.add_token(fakeplex.token)
    await cli.DiscoverServers(auth_pb2.DiscoverServersRequest())
    creds = await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server_id))
    assert creds.token == fakeplex.token, "logging in / discovering again restores the server"


async def test_unknown_and_malformed_ids(
    cli: auth_pb2_grpc.AuthServiceStub, scanner: auth_pb2_grpc.AuthServiceStub
) -> None:
    missing = str(uuid.uuid4())
    calls = [
        cli.GetServer(auth_pb2.GetServerRequest(server_id=missing)),
        cli.CheckServer(auth_pb2.CheckServerRequest(server_id=missing)),
        cli.RemoveServer(auth_pb2.RemoveServerRequest(server_id=missing)),
        scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=missing)),
        cli.DiscoverServers(auth_pb2.DiscoverServersRequest(account_id=missing)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    for bad in ("", "not-a-uuid"):
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await cli.GetServer(auth_pb2.GetServerRequest(server_id=bad))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(invalid.value)[0][0] == "server_id"


async def test_servers_plex_tv_no_longer_lists_are_vanished_not_deleted(
    cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess, server_id: str
) -> None:
    async with fakeplex.control() as control:
        await control.set_listed(False)  # the server disappears from the account's plex.tv resources
        try:
            reply = await cli.DiscoverServers(auth_pb2.DiscoverServersRequest())
            assert (reply.added, reply.updated, reply.vanished) == (0, 0, 1)
            statuses = {s.machine_identifier: s.status for s in reply.servers}
            assert statuses[fakeplex.machine_identifier] == auth_pb2.SERVER_STATUS_VANISHED
            kept = (await cli.GetServer(auth_pb2.GetServerRequest(server_id=server_id))).server
            assert kept.status == auth_pb2.SERVER_STATUS_VANISHED and kept.connections, "kept, not deleted"
            check = await cli.CheckServer(auth_pb2.CheckServerRequest(server_id=server_id))
            assert check.server.status == auth_pb2.SERVER_STATUS_VANISHED, "only discovery brings it back"
            again = await cli.DiscoverServers(auth_pb2.DiscoverServersRequest())
            assert again.vanished == 0, "already vanished"
        finally:
            await control.set_listed(True)
    back = await cli.DiscoverServers(auth_pb2.DiscoverServersRequest())
    assert (back.added, back.vanished) == (0, 0)
    statuses = {s.machine_identifier: s.status for s in back.servers}
    assert statuses[fakeplex.machine_identifier] != auth_pb2.SERVER_STATUS_VANISHED, "listed again: back"


async def test_no_token_in_logs_or_events(
    auth: ServiceStack,
    cli: auth_pb2_grpc.AuthServiceStub,
    scanner: auth_pb2_grpc.AuthServiceStub,
    fakeplex: FakePlexProcess,
    primary_key: tuple[str, str],
    server_events: EventLog,
    otlp: OtlpReceiver,
) -> None:
    """login -> discover -> check -> credentials (and some failures), then grep everything auth wrote."""
    reply = await login(cli, fakeplex)
    [server] = [s for s in reply.servers if s.machine_identifier == fakeplex.machine_identifier]
    await cli.DiscoverServers(auth_pb2.DiscoverServersRequest())
    await cli.CheckServer(auth_pb2.CheckServerRequest(server_id=server.id))
    creds = await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server.id))
    assert creds.token == fakeplex.token
    wrong = "wrong-token-" + uuid.uuid4().hex
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await cli.AddServer(auth_pb2.AddServerRequest(url=fakeplex.local_url, token=wrong))
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError):
        await cli.AddServer(auth_pb2.AddServerRequest(url=f"{fakeplex.local_url}/?X-Plex-Token={wrong}", token=wrong))
    await asyncio.sleep(0.3)  # let the log lines reach the file

    secrets_to_find = [fakeplex.token, fakeplex.account_token, wrong, primary_key[1]]
    log_text = await asyncio.to_thread(Path(auth.log_dir / "auth.log").read_text)
    assert "server checked" in log_text and "PIN login approved" in log_text, "the log is the one we think"
    for secret in secrets_to_find:
        assert secret not in log_text
    assert server_events.messages, "events were published"
    for msg in server_events.messages:
        blob = msg.data + repr(msg.headers).encode()
        for secret in secrets_to_find:
            assert secret.encode() not in blob, msg.subject
    assert wrong not in (rejected.value.details() or "")
    deadline = asyncio.get_running_loop().time() + 5
    while not any(span.service == "auth" and span.name.startswith("plex ") for span in otlp.snapshot()):
        assert asyncio.get_running_loop().time() < deadline, "auth exported no Plex spans"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the last batch
    with otlp.lock:
        exported = b"".join(otlp.raw)
    for secret in secrets_to_find:
        assert secret.encode() not in exported, "a token reached an exported span or log record"


async def test_every_request_carries_the_client_headers_and_no_url_a_token(fakeplex: FakePlexProcess) -> None:
    """Everything this module made auth send to plex.tv and to the server, as fakeplex received it."""
    async with fakeplex.control() as control:
        requests = await control.requests()
    assert_client_headers(requests)
    templates = {(r["method"], r["template"]) for r in requests}
    assert {
        ("POST", "/api/v2/pins"),
        ("GET", "/api/v2/pins/{pin_id}"),
        ("GET", "/api/v2/user"),
        ("GET", "/api/v2/resources"),
        ("GET", "/identity"),
        ("GET", "/"),
    } <= templates
    assert {r["listener"] for r in requests} == {"control", "local", "https", "remote", "relay"}
    for entry in requests:
        needs_token = entry["template"] in ("/", "/api/v2/user", "/api/v2/resources")
        assert entry["token_in_header"] == needs_token, f"{entry['method']} {entry['template']}"
        if entry["template"] == "/api/v2/resources":
            assert entry["query"] == {"includeHttps": "1", "includeRelay": "1"}
