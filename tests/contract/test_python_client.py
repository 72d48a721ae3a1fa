"""The Python client (clients/python) against a real stack: its examples, paging, resumed and reconnected watches,
errors mapped with their details, retries while a service restarts, and TLS with a client certificate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from plexsync_client import (
    Addresses,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PlexsyncClient,
    ResourceExhaustedError,
    RetryPolicy,
    TlsOptions,
    UnauthenticatedError,
    UnavailableError,
    pages,
)
from plexsync_client.v1 import auth_pb2, catalog_pb2, common_pb2, scanner_pb2

from tests.contract.conftest import MOVIES, ROOT, Reference, tls_catalog
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(300)
EXAMPLES = ROOT / "clients" / "python" / "examples"


def _example(reference: Reference, name: str, *args: str) -> list[str]:
    env = {**os.environ, "PLEXSYNC_TOKEN": reference.stack.tokens["reader"]}
    catalog = reference.stack.addresses["catalog"]
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--catalog", catalog, "--insecure", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_new_items_example_lists_every_item_across_pages(reference: Reference) -> None:
    lines = _example(
        reference,
        "new_items.py",
        "--library",
        reference.library_id,
        "--since",
        "2000-01-01T00:00:00Z",
        "--page-size",
        "5",
    )
    with reference.client() as client:
        expected = {
            i.id
            for i in client.catalog.ListItems(
                catalog_pb2.ListItemsRequest(library_id=reference.library_id, page_size=1000)
            ).items
        }
        request = catalog_pb2.ListItemsRequest(library_id=reference.library_id, page_size=5)
        assert sum(1 for _ in pages(client.catalog.ListItems, request)) == math.ceil(MOVIES / 5)
    assert len(expected) == MOVIES
    assert {line.split("\t")[0] for line in lines} == expected and len(lines) == MOVIES
    future = _example(reference, "new_items.py", "--library", reference.library_id, "--since", "2100-01-01T00:00:00Z")
    assert future == []


def test_the_follow_changes_example_resumes_where_it_stopped(reference: Reference, tmp_path: Path) -> None:
    state = tmp_path / "token"
    with reference.client() as client:
        everything = client.watch_changes(from_oldest=True, library_id=reference.library_id)
        oldest = []
        for change in everything:
            oldest.append((change.item_id, change.kind))
            if len(oldest) == MOVIES:
                everything.close()
    assert {kind for _, kind in oldest} == {common_pb2.CHANGE_KIND_ADDED}
    first = _example(reference, "follow_changes.py", "--state", str(state), "--from-oldest", "--max", "9")
    second = _example(reference, "follow_changes.py", "--state", str(state), "--max", "5")
    seen = [json.loads(line)["item_id"] for line in first + second]
    assert seen == [item for item, _ in oldest[:14]]  # nothing twice, nothing skipped


def test_errors_carry_the_code_and_the_details(reference: Reference) -> None:
    missing = str(uuid.uuid4())
    with reference.client() as client:
        with pytest.raises(NotFoundError) as not_found:
            client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=missing))
        assert not_found.value.code == grpc.StatusCode.NOT_FOUND
        assert not_found.value.resource is not None and not_found.value.resource.name == missing
        assert not_found.value.reason and not_found.value.details.domain == "catalog.plexsync.dev"
        with pytest.raises(InvalidArgumentError) as invalid:
            list(client.iter_items(catalog_pb2.ListItemsRequest(library_id="not-a-uuid")))
        assert [v.field for v in invalid.value.field_violations] == ["library_id"]
        assert invalid.value.details.domain == "catalog.plexsync.dev"
        with pytest.raises(PermissionDeniedError) as denied:
            client.auth.AddServer(auth_pb2.AddServerRequest(url="http://plex.example:32400", token="t" * 20))
        assert "reader" in denied.value.message and denied.value.reason
        with pytest.raises(InvalidArgumentError):  # a stream's error is mapped too
            next(iter(client.watch_changes(resume_token="made-up", reconnect=False)))
    stranger = PlexsyncClient(reference.addresses(), token="not-a-token", insecure=True)
    with stranger, pytest.raises(UnauthenticatedError):
        stranger.auth.ListServers(auth_pb2.ListServersRequest())


def test_watch_scan_follows_a_scan_to_its_end(reference: Reference) -> None:
    with reference.client("cli") as admin:
        scan = admin.scanner.ScanLibrary(
            scanner_pb2.ScanLibraryRequest(library_id=reference.library_id, mode=common_pb2.SCAN_MODE_INCREMENTAL)
        ).scan
    with reference.client() as client:
        events = list(client.watch_scan(scan.id))
        finished = list(client.watch_scan(reference.scan_id))  # over before the watch: replayed to its end
    assert events and {e.scan_id for e in events} == {scan.id}
    assert events[-1].WhichOneof("payload") == "completed", events[-1]
    assert finished[-1].WhichOneof("payload") == "completed" and {e.scan_id for e in finished} == {reference.scan_id}


def test_plain_tcp_must_be_asked_for(reference: Reference) -> None:
    with pytest.raises(ValueError, match="insecure=True"):
        PlexsyncClient(reference.addresses(), token="x")
    nowhere = PlexsyncClient(
        Addresses(catalog=reference.stack.reserve("nowhere")), insecure=True, retry=RetryPolicy(3, 0.05)
    )
    with nowhere, pytest.raises(UnavailableError):
        nowhere.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id))


def test_tls_with_a_client_certificate(reference: Reference, tmp_path: Path) -> None:
    """A catalog serving mTLS on the same database: the client verifies it with the CA and presents its cert."""
    with tls_catalog(reference, tmp_path, client_auth=True) as tls_stack:
        assert tls_stack.ca is not None
        pair = tls_stack.cert("reader")
        options = TlsOptions(ca_file=tls_stack.ca.ca_file, cert_file=pair.cert_file, key_file=pair.key_file)
        addresses = Addresses(catalog=tls_stack.addresses["catalog"])
        token = reference.stack.tokens["reader"]
        with PlexsyncClient(addresses, token=token, tls=options) as client:
            item = client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id)).item
            assert item.id == reference.item_id
        no_cert = TlsOptions(ca_file=tls_stack.ca.ca_file)
        refused = PlexsyncClient(addresses, token=token, tls=no_cert, retry=RetryPolicy(1))
        with refused, pytest.raises(UnavailableError):
            refused.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id))


def test_a_rate_limited_call_waits_as_retry_info_says(reference: Reference, tmp_path: Path) -> None:
    """A catalog allowing the reader 2 calls a second: RESOURCE_EXHAUSTED carries RetryInfo, and the client waits
    that long and tries again, so a burst of calls all succeed; without retries the error reaches the caller."""
    stack = ServiceStack(
        database_url=reference.stack.database_url,
        nats_url=reference.stack.nats_url,
        log_dir=tmp_path,
        tokens=reference.stack.tokens,
        extra_env=dict(reference.stack.extra_env),
    )
    stack.start("catalog", PLEXSYNC_RATE_LIMIT_PER_SECOND="2", PLEXSYNC_RATE_LIMIT_BURST="2")
    try:
        addresses = Addresses(catalog=stack.addresses["catalog"])
        token = reference.stack.tokens["reader"]
        request = catalog_pb2.GetItemRequest(item_id=reference.item_id)
        with PlexsyncClient(addresses, token=token, insecure=True, retry=RetryPolicy(1)) as once:
            with pytest.raises(ResourceExhaustedError) as refused:
                for _ in range(10):
                    once.catalog.GetItem(request)
            assert refused.value.retry_delay is not None and refused.value.retry_delay > 0
        with PlexsyncClient(addresses, token=token, insecure=True, retry=RetryPolicy(attempts=20)) as patient:
            assert all(patient.catalog.GetItem(request).item.id == reference.item_id for _ in range(6))
    finally:
        stack.stop_all()


def test_calls_and_watches_ride_out_a_catalog_restart(reference: Reference) -> None:
    """Last in the module: the catalog is stopped and started again on its address."""
    stack = reference.stack
    with reference.client(retry=RetryPolicy(attempts=60, initial_backoff=0.2, max_backoff=1.0), timeout=120) as client:
        feed = client.watch_changes(from_oldest=True, library_id=reference.library_id)
        iterator = iter(feed)
        head = [next(iterator).item_id for _ in range(3)]
        token = feed.resume_token
        feed.close()
        (catalog,) = [c for c in stack.children if c.name == "catalog"]
        catalog.stop()
        stack.children.remove(catalog)

        def start_again() -> None:
            time.sleep(1)
            stack.start("catalog")

        restart = threading.Thread(target=start_again)
        restart.start()
        try:
            item = client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=reference.item_id)).item  # retried
            resumed = client.watch_changes(resume_token=token, library_id=reference.library_id)
            rest = []
            for change in resumed:
                rest.append(change.item_id)
                if len(rest) == MOVIES - 3:
                    resumed.close()
        finally:
            restart.join()
    assert item.id == reference.item_id
    assert len(set(head + rest)) == MOVIES


def test_the_docs_show_the_examples_as_they_are() -> None:
    page = (ROOT / "docs" / "clients.md").read_text()
    for example in [*EXAMPLES.glob("*.py"), *(ROOT / "clients" / "typescript" / "examples").glob("*.ts")]:
        assert example.read_text() in page, f"docs/clients.md does not show {example.name} as it is"
