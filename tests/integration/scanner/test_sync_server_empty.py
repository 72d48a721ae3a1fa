"""SyncServer when Plex lists no sections: libraries are marked removed only because the scanner asked Plex twice
and said so (`confirmed_empty`); the catalog refuses an unconfirmed empty registration, so a caller sending an empty
list by mistake (or a Plex answer cut short) cannot wipe a server's libraries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from plexsync.fakeplex import FakePlexControl
from plexsync.v1 import auth_pb2, auth_pb2_grpc, catalog_pb2, catalog_pb2_grpc, scanner_pb2, scanner_pb2_grpc

from tests.integration.scanner.support import fakeplex_process
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), "--movies", "3", "--shows", "0") as info:
        yield info


@pytest.fixture(scope="module")
async def channels(service_stack: ServiceStack, fake: dict[str, Any]) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    service_stack.start_plex_services(fake["url"])
    chans = {name: service_stack.channel(name) for name in ("catalog", "auth", "scanner")}
    yield chans
    for channel in chans.values():
        await channel.close()


async def test_an_empty_plex_removes_libraries_only_once_confirmed(
    channels: dict[str, grpc.aio.Channel], fake: dict[str, Any]
) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    added = await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Plex"))
    server_id = added.server.id
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    first = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server_id))
    assert first.added >= 1 and first.removed == 0
    catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])

    with pytest.raises(grpc.aio.AioRpcError) as refused:  # an unconfirmed empty list changes nothing
        await catalog.RegisterLibraries(catalog_pb2.RegisterLibrariesRequest(server_id=server_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server_id))
    assert len(listed.libraries) == first.added

    async with FakePlexControl(fake["url"]) as ctl:
        for library in first.libraries:
            await ctl.remove_section(library.plex_key)
    emptied = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server_id))
    assert emptied.removed == first.added and emptied.added == 0
    listed = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server_id))
    assert not listed.libraries
