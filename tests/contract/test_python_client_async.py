"""The Python client's asyncio flavour (plexsync_client.aio) against a real stack: paging, errors mapped to the sync
client's types, retries and a reconnecting watch while a catalog starts and restarts, following a change, its
example, closing with `async with`, and TLS with a client certificate."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from plexsync.fakeplex.control import FakePlexControl
from plexsync_client import (
    Addresses,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PlexsyncError,
    RetryPolicy,
    TlsOptions,
    UnauthenticatedError,
    UnavailableError,
)
from plexsync_client.aio import AsyncPlexsyncClient, pages
from plexsync_client.v1 import auth_pb2, catalog_pb2, common_pb2, scanner_pb2

from tests.contract.conftest import MOVIES, ROOT, Reference, tls_catalog
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(300)
EXAMPLES = ROOT / "clients" / "python" / "examples"


def _client(reference: Reference, identity: str = "reader", **options: Any) -> AsyncPlexsyncClient:
    return AsyncPlexsyncClient(reference.addresses(), token=reference.stack.tokens[identity], insecure=True, **options)


@contextmanager
def second_catalog(reference: Reference, directory: Path) -> Iterator[ServiceStack]:
    """A catalog on the reference's database at an address of its own, not started yet (`stack.start("catalog")`)."""
    stack = ServiceStack(
        database_url=reference.stack.database_url,
        nats_url=reference.stack.nats_url,
        log_dir=directory,
        tokens=reference.stack.tokens,
        extra_env=dict(reference.stack.extra_env),
    )
    stack.reserve("catalog")
    try:
        yield stack
    finally:
        stack.stop_all()


async def _start_later(stack: ServiceStack, delay: float) -> None:
    await asyncio.sleep(delay)
    await asyncio.to_thread(stack.start, "catalog")


async def _next(changes: AsyncIterator[common_pb2.ItemChange]) -> common_pb2.ItemChange:
    return await anext(changes)


async def test_paging_goes_over_every_page(reference: Reference) -> None:
    with reference.client() as sync:
        request = catalog_pb2.ListItemsRequest(library_id=reference.library_id, page_size=1000)
        expected = [i.id for i in sync.iter_items(request)]
    assert len(expected) == MOVIES
    async with _client(reference) as client:
        request = catalog_pb2.ListItemsRequest(library_id=reference.library_id, page_size=5)
        ids = [item.id async for item in client.iter_items(request)]
        sizes = [len(page.items) async for page in pages(client.catalog.ListItems, request)]
        assert request.page_token == ""  # not changed
        libraries = [lib.id async for lib in client.iter_libraries(catalog_pb2.ListLibrariesRequest(page_size=1))]
        assert reference.library_id in libraries
    assert sorted(ids) == sorted(expected) and len(ids) == MOVIES
    assert len(sizes) == math.ceil(MOVIES / 5) and sum(sizes) == MOVIES


async def test_async_with_closes_the_channels(reference: Reference) -> None:
    async with _client(reference) as client:
        channel = client.channel("catalog")
        got = await client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id))
        assert got.item.id == reference.item_id
    assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN
    assert client._channels == {}


async def test_errors_map_to_the_sync_clients_types(reference: Reference) -> None:
    missing = str(uuid.uuid4())
    with reference.client() as sync, pytest.raises(PlexsyncError) as sync_error:
        sync.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=missing))
    async with _client(reference) as client:
        with pytest.raises(NotFoundError) as not_found:
            await client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=missing))
        assert type(not_found.value) is type(sync_error.value) is NotFoundError
        assert not_found.value.code == grpc.StatusCode.NOT_FOUND
        assert not_found.value.resource is not None and not_found.value.resource.name == missing
        assert not_found.value.reason == sync_error.value.reason and not_found.value.reason
        assert not_found.value.details.domain == "catalog.plexsync.dev"
        assert not_found.value.method == "/plexsync.v1.CatalogService/GetItem"
        with pytest.raises(InvalidArgumentError) as invalid:
            [i async for i in client.iter_items(catalog_pb2.ListItemsRequest(library_id="not-a-uuid"))]
        assert [v.field for v in invalid.value.field_violations] == ["library_id"]
        with pytest.raises(PermissionDeniedError) as denied:
            await client.auth.AddServer(auth_pb2.AddServerRequest(url="http://plex.example:32400", token="t" * 20))
        assert "reader" in denied.value.message and denied.value.reason
        with pytest.raises(InvalidArgumentError):  # a stream's error is mapped too
            [c async for c in client.watch_changes(resume_token="made-up", reconnect=False)]
    stranger = AsyncPlexsyncClient(reference.addresses(), token="not-a-token", insecure=True)
    async with stranger:
        with pytest.raises(UnauthenticatedError):
            await stranger.auth.ListServers(auth_pb2.ListServersRequest())


async def test_plain_tcp_must_be_asked_for_and_an_absent_service_is_unavailable(reference: Reference) -> None:
    with pytest.raises(ValueError, match="insecure=True"):
        AsyncPlexsyncClient(reference.addresses(), token="x")
    nowhere = AsyncPlexsyncClient(
        Addresses(catalog=reference.stack.reserve("nowhere")), insecure=True, retry=RetryPolicy(3, 0.05)
    )
    async with nowhere:
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            await nowhere.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id))
        assert time.monotonic() - started < 10


async def test_watch_scan_follows_a_scan_to_its_end(reference: Reference) -> None:
    async with _client(reference, "cli") as admin:
        scan = (
            await admin.scanner.ScanLibrary(
                scanner_pb2.ScanLibraryRequest(library_id=reference.library_id, mode=common_pb2.SCAN_MODE_INCREMENTAL)
            )
        ).scan
        events = [e async for e in admin.watch_scan(scan.id)]
        finished = [e async for e in admin.watch_scan(reference.scan_id)]
    assert events and {e.scan_id for e in events} == {scan.id}
    assert events[-1].WhichOneof("payload") == "completed", events[-1]
    assert finished[-1].WhichOneof("payload") == "completed" and {e.scan_id for e in finished} == {reference.scan_id}


async def test_the_async_follow_changes_example_resumes_where_it_stopped(reference: Reference, tmp_path: Path) -> None:
    with reference.client() as sync:
        feed = sync.watch_changes(from_oldest=True, library_id=reference.library_id)
        oldest = []
        for change in feed:
            oldest.append(change.item_id)
            if len(oldest) == MOVIES:
                feed.close()
    state = tmp_path / "token"
    env = {**os.environ, "PLEXSYNC_TOKEN": reference.stack.tokens["reader"]}
    base = [
        sys.executable,
        str(EXAMPLES / "follow_changes_async.py"),
        "--catalog",
        reference.stack.addresses["catalog"],
    ]
    lines: list[str] = []
    for extra in (["--from-oldest", "--max", "9"], ["--max", "5"]):
        run = await asyncio.create_subprocess_exec(
            *base, "--insecure", "--state", str(state), *extra, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(run.communicate(), 120)
        assert run.returncode == 0, err.decode()
        lines += out.decode().splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == oldest[:14]  # nothing twice, nothing skipped


async def test_tls_with_a_client_certificate(reference: Reference, tmp_path: Path) -> None:
    with tls_catalog(reference, tmp_path, client_auth=True) as tls_stack:
        assert tls_stack.ca is not None
        pair = tls_stack.cert("reader")
        options = TlsOptions(ca_file=tls_stack.ca.ca_file, cert_file=pair.cert_file, key_file=pair.key_file)
        addresses = Addresses(catalog=tls_stack.addresses["catalog"])
        token = reference.stack.tokens["reader"]
        async with AsyncPlexsyncClient(addresses, token=token, tls=options) as client:
            got = await client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id))
            assert got.item.id == reference.item_id
        refused = AsyncPlexsyncClient(addresses, token=token, tls=TlsOptions(ca_file=tls_stack.ca.ca_file))
        async with refused:
            with pytest.raises(UnavailableError):
                await refused.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id))


async def test_calls_retry_and_a_watch_reconnects_and_follows_a_change(reference: Reference, tmp_path: Path) -> None:
    """Last in the module (it changes an item). A second catalog whose address answers nothing at first: a GetItem
    is retried (UNAVAILABLE) until it is up; a feed that read every change from it and waits for the next one
    reconnects from its resume token when that catalog restarts, and gets the next change, nothing twice."""
    retry = RetryPolicy(attempts=60, initial_backoff=0.2, max_backoff=1.0)
    with second_catalog(reference, tmp_path) as stack:
        addresses = Addresses(catalog=stack.addresses["catalog"])
        async with AsyncPlexsyncClient(
            addresses, token=reference.stack.tokens["reader"], insecure=True, retry=retry, timeout=120
        ) as client:
            starting = asyncio.create_task(_start_later(stack, 1.0))
            started = time.monotonic()
            item = (await client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id))).item
            assert item.id == reference.item_id and time.monotonic() - started >= 1.0  # answered once it was up
            await starting

            feed = client.watch_changes(from_oldest=True, library_id=reference.library_id)
            changes = aiter(feed)
            head = [(await anext(changes)).item_id for _ in range(MOVIES)]
            following = asyncio.create_task(_next(changes))
            await asyncio.sleep(0.5)
            assert not following.done()  # nothing more yet

            (catalog,) = stack.children
            await asyncio.to_thread(catalog.stop)
            stack.children.remove(catalog)
            await asyncio.to_thread(stack.start, "catalog")
            deadline = time.monotonic() + 60
            while feed.reconnects == 0 and not following.done():
                assert time.monotonic() < deadline, "the feed did not reconnect"
                await asyncio.sleep(0.1)

            async with FakePlexControl(reference.fake["url"]) as plex:
                await plex.change(item.rating_key, title="Changed for the async feed")
            async with _client(reference, "cli") as admin:
                await admin.scanner.ScanLibrary(
                    scanner_pb2.ScanLibraryRequest(library_id=reference.library_id, mode=common_pb2.SCAN_MODE_DEEP)
                )
            change = await asyncio.wait_for(following, 90)
            feed.close()
            await changes.aclose()
    assert len(set(head)) == MOVIES
    assert feed.reconnects >= 1
    assert change.item_id == item.id and change.kind == common_pb2.CHANGE_KIND_UPDATED, change
    assert change.title == "Changed for the async feed"
    assert feed.resume_token == change.resume_token
