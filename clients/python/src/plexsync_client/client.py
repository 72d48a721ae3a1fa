"""`PlexsyncClient`: the four services' stubs over configured channels, paging iterators and watch helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from plexsync_client.channel import ChannelOptions, MappedStream, RetryPolicy, TlsOptions, open_channel
from plexsync_client.errors import PlexsyncError
from plexsync_client.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    events_pb2,
    scanner_pb2,
    scanner_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    version_pb2_grpc,
)

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
ChannelT = TypeVar("ChannelT")
StubT = TypeVar("StubT")

# Codes after which a watch reconnects (from where it stopped) instead of raising: the service went away (a
# restarting server cancels its streams once the drain grace is over).
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True)
class Addresses:
    """Where each service listens ("host:port"); a client only needs the ones it calls."""

    catalog: str | None = None
    auth: str | None = None
    scanner: str | None = None
    scheduler: str | None = None


def repeated_field(response: Message) -> str:
    """The name of a List response's one repeated field (AIP-158: the page's resources)."""
    names = [f.name for f in response.DESCRIPTOR.fields if f.is_repeated]
    if len(names) != 1:
        raise TypeError(f"{response.DESCRIPTOR.full_name} is not a List response (repeated fields: {names})")
    return names[0]


def next_page_request(request: Req, response: Message) -> Req | None:
    """The request for the page after `response` (a copy of `request` with its next_page_token), None after the
    last page."""
    token = getattr(response, "next_page_token", "")
    if not token:
        return None
    following = type(request)()
    following.CopyFrom(request)
    following.page_token = token  # type: ignore[attr-defined]
    return following


def pages(method: Callable[[Req], Resp], request: Req) -> Iterator[Resp]:
    """Every page of a List call, following next_page_token until it is empty (the request is not changed)."""
    first = type(request)()
    first.CopyFrom(request)
    current: Req | None = first
    while current is not None:
        response = method(current)
        yield response
        current = next_page_request(current, response)


def paginate(method: Callable[[Req], Resp], request: Req) -> Iterator[Any]:
    """The resources of every page of a List call, one at a time."""
    for page in pages(method, request):
        yield from getattr(page, repeated_field(page))


def watch_changes_request(resume_token: str, library_id: str, from_oldest: bool) -> catalog_pb2.WatchChangesRequest:
    """The WatchChanges request of a feed: after `resume_token` when it has one, else from now (or the oldest)."""
    return catalog_pb2.WatchChangesRequest(
        resume_token=resume_token, library_id=library_id, from_oldest=from_oldest and not resume_token
    )


def reconnect_pause(retry: RetryPolicy, failures: int, error: PlexsyncError) -> float | None:
    """How long a watch waits before reconnecting after its `failures`-th failure in a row (`error`); None when it
    must raise instead (a code it does not reconnect after, or too many failures in a row)."""
    if error.code not in RECONNECT_CODES or failures > retry.attempts * 4:
        return None
    return retry.delay(min(failures, 8), error.retry_delay)


def scan_ended(event: events_pb2.ScanEvent) -> bool:
    """Whether `event` is a scan's last one (completed, failed or cancelled)."""
    return event.WhichOneof("payload") in ("completed", "failed", "cancelled")


class FeedState(Generic[StubT]):
    """What ChangeFeed and plexsync_client.aio's AsyncChangeFeed share: where the feed is (`resume_token`, the last
    change yielded), what it follows, and how it reconnects; the next request comes from `request()`."""

    def __init__(
        self,
        stub: StubT,
        *,
        resume_token: str = "",
        library_id: str = "",
        from_oldest: bool = False,
        retry: RetryPolicy,
        reconnect: bool = True,
    ) -> None:
        self._stub = stub
        self.resume_token = resume_token
        self._library_id = library_id
        self._from_oldest = from_oldest
        self._retry = retry
        self._reconnect = reconnect
        self._closed = False
        self.reconnects = 0

    def request(self) -> catalog_pb2.WatchChangesRequest:
        """The WatchChanges request that goes on from `resume_token`."""
        return watch_changes_request(self.resume_token, self._library_id, self._from_oldest)


class ChangeFeed(FeedState[catalog_pb2_grpc.CatalogServiceStub]):
    """Item changes in commit order from WatchChanges; `resume_token` is the last one yielded.

    When the stream breaks (UNAVAILABLE: the catalog restarted, a network cut), it reconnects with that token, so
    nothing is yielded twice and nothing committed after it is missed. Before the first change there is no token:
    a feed started "from now" that breaks then restarts from the new now (pass from_oldest to lose nothing)."""

    _call: MappedStream | None = None

    def _open(self) -> MappedStream:
        call: MappedStream = self._stub.WatchChanges(self.request())
        return call

    def __iter__(self) -> Iterator[common_pb2.ItemChange]:
        failures = 0
        while not self._closed:
            self._call = self._open()
            try:
                for response in self._call:
                    failures = 0
                    for change in response.changes:
                        self.resume_token = change.resume_token
                        yield change
                        if self._closed:
                            return
            except PlexsyncError as exc:
                if self._closed:
                    return
                failures += 1
                pause = reconnect_pause(self._retry, failures, exc) if self._reconnect else None
                if pause is None:
                    raise
                time.sleep(pause)
            if not self._reconnect:
                return
            self.reconnects += 1

    def close(self) -> None:
        """End the feed (from another thread too); the iteration stops."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()


class ServiceChannels(Generic[ChannelT]):
    """What PlexsyncClient and plexsync_client.aio's AsyncPlexsyncClient share: their options (checked here) and
    one channel per service, opened on first use by `_open_channel`."""

    def __init__(
        self,
        addresses: Addresses,
        *,
        token: str | None = None,
        tls: TlsOptions | None = None,
        insecure: bool = False,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.addresses = addresses
        self.options = ChannelOptions(
            token=token, tls=tls, insecure=insecure, timeout=timeout, retry=retry or RetryPolicy()
        )
        self._channels: dict[str, ChannelT] = {}

    def _open_channel(self, target: str) -> ChannelT:
        raise NotImplementedError

    def channel(self, service: str) -> ChannelT:
        """The channel to `service` ("catalog", "auth", "scanner", "scheduler"), opened on first use."""
        if service not in self._channels:
            target = getattr(self.addresses, service)
            if not target:
                raise ValueError(f"no address for the {service} service: give Addresses({service}='host:port')")
            self._channels[service] = self._open_channel(target)
        return self._channels[service]


class PlexsyncClient(ServiceChannels[grpc.Channel]):
    """Typed access to plexsync's services for other systems.

    >>> client = PlexsyncClient(Addresses(catalog="catalog:50051"), token="...", tls=TlsOptions(ca_file="ca.pem"))
    >>> for item in client.iter_items(catalog_pb2.ListItemsRequest(library_id=lib)): ...

    `catalog`, `auth`, `scanner` and `scheduler` are the generated stubs (every RPC, typed); calls on them carry the
    token, get the default deadline, are retried on UNAVAILABLE and raise `PlexsyncError` subclasses.
    plexsync_client.aio's AsyncPlexsyncClient is the same for asyncio."""

    def _open_channel(self, target: str) -> grpc.Channel:
        return open_channel(target, self.options)

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self.channel("catalog"))

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel("auth"))

    @property
    def scanner(self) -> scanner_pb2_grpc.ScannerServiceStub:
        return scanner_pb2_grpc.ScannerServiceStub(self.channel("scanner"))

    @property
    def scheduler(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self.channel("scheduler"))

    def version(self, service: str) -> version_pb2_grpc.VersionServiceStub:
        """The VersionService every service serves."""
        return version_pb2_grpc.VersionServiceStub(self.channel(service))

    def audit(self, service: str) -> audit_pb2_grpc.AuditServiceStub:
        """The AuditService every service serves (admin only)."""
        return audit_pb2_grpc.AuditServiceStub(self.channel(service))

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> PlexsyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- paging
    def iter_items(self, request: catalog_pb2.ListItemsRequest) -> Iterator[common_pb2.Item]:
        """Every item ListItems returns for `request`, across pages."""
        yield from paginate(self.catalog.ListItems, request)

    def iter_search_results(self, request: catalog_pb2.SearchItemsRequest) -> Iterator[catalog_pb2.SearchResult]:
        yield from paginate(self.catalog.SearchItems, request)

    def iter_libraries(self, request: catalog_pb2.ListLibrariesRequest) -> Iterator[common_pb2.Library]:
        yield from paginate(self.catalog.ListLibraries, request)

    def iter_path_replacements(
        self, request: catalog_pb2.ListPathReplacementsRequest
    ) -> Iterator[common_pb2.PathReplacement]:
        yield from paginate(self.catalog.ListPathReplacements, request)

    def iter_collections(self, request: catalog_pb2.ListCollectionsRequest) -> Iterator[common_pb2.Collection]:
        yield from paginate(self.catalog.ListCollections, request)

    def iter_networks(self, request: catalog_pb2.ListNetworksRequest) -> Iterator[common_pb2.Network]:
        yield from paginate(self.catalog.ListNetworks, request)

    def iter_servers(self, request: auth_pb2.ListServersRequest | None = None) -> Iterator[auth_pb2.Server]:
        yield from paginate(self.auth.ListServers, request or auth_pb2.ListServersRequest())

    def iter_scans(self, request: scanner_pb2.ListScansRequest) -> Iterator[common_pb2.Scan]:
        yield from paginate(self.scanner.ListScans, request)

    def iter_watchers(self, request: scanner_pb2.ListWatchersRequest) -> Iterator[scanner_pb2.Watcher]:
        yield from paginate(self.scanner.ListWatchers, request)

    def iter_jobs(self, request: scheduler_pb2.ListJobsRequest) -> Iterator[common_pb2.Job]:
        yield from paginate(self.scheduler.ListJobs, request)

    def iter_schedules(self, request: scheduler_pb2.ListSchedulesRequest) -> Iterator[scheduler_pb2.Schedule]:
        yield from paginate(self.scheduler.ListSchedules, request)

    def iter_audit_events(self, service: str, request: audit_pb2.ListAuditEventsRequest) -> Iterator[Any]:
        yield from paginate(self.audit(service).ListAuditEvents, request)

    # --------------------------------------------------------------------------------------------- watching
    def watch_scan(self, scan_id: str) -> Iterator[events_pb2.ScanEvent]:
        """A scan's events until it ends (started, progress, item errors, then completed/failed/cancelled)."""
        stream: MappedStream = self.scanner.WatchScan(scanner_pb2.WatchScanRequest(scan_id=scan_id))
        try:
            for response in stream:
                yield response.event
                if scan_ended(response.event):
                    return
        finally:
            stream.cancel()

    def watch_changes(
        self, *, resume_token: str = "", library_id: str = "", from_oldest: bool = False, reconnect: bool = True
    ) -> ChangeFeed:
        """A ChangeFeed of item changes after `resume_token` (or from now, or from the oldest kept change)."""
        return ChangeFeed(
            self.catalog,
            resume_token=resume_token,
            library_id=library_id,
            from_oldest=from_oldest,
            retry=self.options.retry,
            reconnect=reconnect,
        )
