"""AddServer for users without plex.tv, listing and removing servers, unreachable servers and bad input, with the
auth service and fakeplex as real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio
from plexsync.common.grpc_errors import field_violations
from plexsync.devstack.infra import free_port
from plexsync.v1 import auth_pb2, auth_pb2_grpc, events_pb2

from tests.integration.auth.conftest import (
    EventLog,
    FakePlexProcess,
    GdmResponder,
    assert_client_headers,
    auth_env,
    key_spec,
    running_fakeplex,
)
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def auth(
    service_stack: ServiceStack, fakeplex: FakePlexProcess, primary_key: tuple[str, str], gdm_responder: GdmResponder
) -> Iterator[ServiceStack]:
    service_stack.start("auth", **auth_env(fakeplex, key_spec(primary_key), gdm_responder.port))
    yield service_stack


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePlexProcess]:
    with running_fakeplex(tmp_path_factory.mktemp("fakeplex-2"), seed=9) as fp:
        yield fp


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


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_add_server_checks_identity_and_token(
    cli: auth_pb2_grpc.AuthServiceStub, scanner: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess
) -> None:
    reply = await cli.AddServer(auth_pb2.AddServerRequest(url=fakeplex.local_url + "/", token=fakeplex.token))
    server = reply.server
    assert server.source == auth_pb2.SERVER_SOURCE_MANUAL
    assert server.machine_identifier == fakeplex.machine_identifier
    assert server.name == "FakePlex 7", "defaults to the server's friendlyName"
    assert server.status == auth_pb2.SERVER_STATUS_ONLINE
    assert server.preferred_uri == fakeplex.local_url
    [conn] = server.connections
    assert conn.kind == auth_pb2.CONNECTION_KIND_LOCAL and conn.reachable
    creds = await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server.id))
    assert (creds.base_url, creds.token) == (fakeplex.local_url, fakeplex.token)

    renamed = await cli.AddServer(auth_pb2.AddServerRequest(url=fakeplex.local_url, token=fakeplex.token, name="Den"))
    assert renamed.server.id == server.id and renamed.server.name == "Den", "adding again updates, not duplicates"


@pytest.mark.parametrize(
    ("url", "token", "fields"),
    [
        ("", "tok", ["url"]),
        ("not a url", "tok", ["url"]),
        ("ftp://192.168.1.10:32400", "tok", ["url"]),
        ("http://user:secret@192.168.1.10:32400", "tok", ["url"]),
        ("http://192.168.1.10:32400/?X-Plex-Token=abc", "abc", ["url"]),
        ("http://192.168.1.10:32400", "", ["token"]),
        ("", "has space", ["url", "token"]),
    ],
)
async def test_add_server_bad_input_is_invalid_argument_with_field_violations(
    cli: auth_pb2_grpc.AuthServiceStub, url: str, token: str, fields: list[str]
) -> None:
    error = await rpc_error(cli.AddServer(auth_pb2.AddServerRequest(url=url, token=token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in field_violations(error)] == fields
    assert "secret" not in (error.details() or "")


async def test_add_server_unreachable_is_unavailable_with_what_to_check(cli: auth_pb2_grpc.AuthServiceStub) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    error = await rpc_error(cli.AddServer(auth_pb2.AddServerRequest(url=url, token="sometoken")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = error.details() or ""
    assert "connection refused" in details and "check the URL" in details and url in details


async def test_add_server_that_is_not_plex(cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess) -> None:
    error = await rpc_error(
        cli.AddServer(auth_pb2.AddServerRequest(url=f"{fakeplex.local_url}/nothing-here", token=fakeplex.token))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error)[0][0] == "url"


async def test_add_server_wrong_token(cli: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess) -> None:
    error = await rpc_error(cli.AddServer(auth_pb2.AddServerRequest(url=fakeplex.local_url, token="wrong-token-1")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, why)] = field_violations(error)
    assert field == "token" and "401" in why
    assert "wrong-token-1" not in (error.details() or "")


async def test_list_servers_pages_and_remove(
    cli: auth_pb2_grpc.AuthServiceStub,
    scanner: auth_pb2_grpc.AuthServiceStub,
    fakeplex: FakePlexProcess,
    second: FakePlexProcess,
) -> None:
    await cli.AddServer(auth_pb2.AddServerRequest(url=fakeplex.local_url, token=fakeplex.token))
    other = (await cli.AddServer(auth_pb2.AddServerRequest(url=second.local_url, token=second.token))).server
    first_page = await cli.ListServers(auth_pb2.ListServersRequest(page_size=1))
    assert len(first_page.servers) == 1 and first_page.next_page_token
    second_page = await cli.ListServers(auth_pb2.ListServersRequest(page_size=1, page_token=first_page.next_page_token))
    assert len(second_page.servers) == 1 and not second_page.next_page_token
    assert {first_page.servers[0].id, second_page.servers[0].id} >= {other.id}
    bad = await rpc_error(cli.ListServers(auth_pb2.ListServersRequest(page_token="garbage")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad)[0][0] == "page_token"
    negative = await rpc_error(cli.ListServers(auth_pb2.ListServersRequest(page_size=-1)))
    assert field_violations(negative)[0][0] == "page_size"

    await cli.RemoveServer(auth_pb2.RemoveServerRequest(server_id=other.id))
    gone = await rpc_error(cli.GetServer(auth_pb2.GetServerRequest(server_id=other.id)))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    gone_creds = await rpc_error(scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=other.id)))
    assert gone_creds.code() == grpc.StatusCode.NOT_FOUND


async def test_server_that_goes_away_is_offline_and_credentials_unavailable(
    cli: auth_pb2_grpc.AuthServiceStub,
    scanner: auth_pb2_grpc.AuthServiceStub,
    tmp_path_factory: pytest.TempPathFactory,
    server_events: EventLog,
) -> None:
    with running_fakeplex(tmp_path_factory.mktemp("fakeplex-3"), seed=10) as doomed:
        server = (await cli.AddServer(auth_pb2.AddServerRequest(url=doomed.local_url, token=doomed.token))).server
    error = await rpc_error(scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server.id)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = error.details() or ""
    assert "unreachable" in details and "check that Plex is running" in details
    assert doomed.token not in details
    checked = await cli.CheckServer(auth_pb2.CheckServerRequest(server_id=server.id))
    assert checked.server.status == auth_pb2.SERVER_STATUS_OFFLINE
    assert not checked.HasField("chosen")
    assert all(not p.reachable and p.last_error for p in checked.probes)
    msg = await server_events.wait_for(f"server.{server.id}.offline")
    assert events_pb2.ServerEvent.FromString(msg.data).offline.error


async def test_discover_without_a_login_says_what_to_do(cli: auth_pb2_grpc.AuthServiceStub) -> None:
    error = await rpc_error(cli.DiscoverServers(auth_pb2.DiscoverServersRequest()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "StartPinLogin" in (error.details() or "") and "AddServer" in (error.details() or "")


async def test_gdm_discovery_works_without_plex_tv(
    cli: auth_pb2_grpc.AuthServiceStub, gdm_responder: GdmResponder
) -> None:
    gdm_responder.answers[:] = [{"Resource-Identifier": "lan-only-42", "Name": "Basement", "Port": "32400"}]
    try:
        reply = await cli.DiscoverServers(auth_pb2.DiscoverServersRequest(use_gdm=True))
    finally:
        gdm_responder.answers.clear()
    [server] = [s for s in reply.servers if s.machine_identifier == "lan-only-42"]
    assert server.source == auth_pb2.SERVER_SOURCE_GDM and server.name == "Basement"
    assert reply.added == 1 and not server.account_id


async def test_re_adding_with_a_new_token_after_revocation(
    cli: auth_pb2_grpc.AuthServiceStub, scanner: auth_pb2_grpc.AuthServiceStub, fakeplex: FakePlexProcess
) -> None:
    server = (await cli.AddServer(auth_pb2.AddServerRequest(url=fakeplex.local_url, token=fakeplex.token))).server
    async with fakeplex.control() as control:
        await control.revoke_token(fakeplex.token)
        try:
            error = await rpc_error(
                scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server.id))
            )
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "re-add" in (error.details() or "")
            fresh = await control.add_token("fresh-token-0123456789")
            readded = await cli.AddServer(auth_pb2.AddServerRequest(url=fakeplex.local_url, token=fresh))
            assert readded.server.id == server.id
            assert readded.server.status == auth_pb2.SERVER_STATUS_ONLINE
            creds = await scanner.GetServerCredentials(auth_pb2.GetServerCredentialsRequest(server_id=server.id))
            assert creds.token == fresh
        finally:
            await control.add_token(fakeplex.token)


async def test_add_server_requests_carry_the_client_headers(fakeplex: FakePlexProcess) -> None:
    """AddServer's checks as fakeplex received them: /identity without a token, / with it in the header only."""
    async with fakeplex.control() as control:
        requests = await control.requests()
    assert_client_headers(requests)
    by_template = {(r["template"], r["token_in_header"]) for r in requests}
    assert {("/identity", False), ("/", True)} <= by_template
    assert all(r["template"] != "/identity" or not r["token_in_header"] for r in requests)
