"""plexsync's Python client for asyncio: `AsyncPlexsyncClient`, the same client as `PlexsyncClient` over grpc.aio.

    async with AsyncPlexsyncClient(Addresses(catalog="catalog:50051"), token="...", tls=TlsOptions(ca_file="ca.pem"))
            as client:
        item = (await client.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=...))).item
        async for item in client.iter_items(catalog_pb2.ListItemsRequest(library_id=...)): ...
        async for change in client.watch_changes(resume_token=token): ...

The options, the channel arguments and credentials, the token, the default deadline, the retry decisions (unary
calls answering UNAVAILABLE, backoff with jitter, at least the server's RetryInfo, within the deadline), the error
types and the requests of paging and watches are those of the sync client (channel.py, client.py, errors.py): only
the waiting is asyncio's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf.message import Message

from plexsync_client.channel import (
    NO_RETRY,
    ChannelOptions,
    call_metadata,
    channel_arguments,
    channel_credentials,
    method_name,
    remaining,
    retry_pause,
    unary_deadline,
)
from plexsync_client.client import (
    Addresses,
    FeedState,
    ServiceChannels,
    next_page_request,
    reconnect_pause,
    repeated_field,
    scan_ended,
)
from plexsync_client.errors import PlexsyncError, from_rpc_error
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

__all__ = [
    "Addresses",
    "AsyncChangeFeed",
    "AsyncPlexsyncClient",
    "AsyncPlexsyncInterceptor",
    "open_aio_channel",
    "pages",
    "paginate",
]

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def open_aio_channel(target: str, options: ChannelOptions) -> grpc.aio.Channel:
    """A grpc.aio.Channel to `target` ("host:port") with the options' interceptor (open it in the event loop that
    uses it)."""
    interceptors = AsyncPlexsyncInterceptor(options).interceptors()
    arguments = channel_arguments(options)
    if options.tls is None:
        return grpc.aio.insecure_channel(target, options=arguments, interceptors=interceptors)
    credentials = channel_credentials(options.tls)
    return grpc.aio.secure_channel(target, credentials, options=arguments, interceptors=interceptors)


async def _mapped(call: Any, method: str) -> AsyncIterator[Any]:
    """A response stream whose failures are PlexsyncErrors."""
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc, method) from None


class AsyncPlexsyncInterceptor:
    """PlexsyncInterceptor for grpc.aio: token, default deadline, UNAVAILABLE retries and error mapping for every
    call of a channel. grpc.aio takes one interceptor object per kind of call: `interceptors()` gives them."""

    def __init__(self, options: ChannelOptions, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._options = options
        self._sleep = sleep

    def _details(self, base: Any, timeout: float | None) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*call_metadata(base.metadata, self._options.token))
        return grpc.aio.ClientCallDetails(base.method, timeout, metadata, base.credentials, base.wait_for_ready)

    async def _unary(self, continuation: Callable[[Any, Any], Any], base: Any, request: Any, *, retry: bool) -> Any:
        deadline = unary_deadline(base.timeout, self._options)
        policy = self._options.retry if retry else NO_RETRY
        attempt = 1
        while True:
            call = await continuation(self._details(base, remaining(deadline)), request)
            try:
                await call
                return call
            except grpc.aio.AioRpcError as exc:
                mapped = from_rpc_error(exc, method_name(base.method))
            pause = retry_pause(policy, attempt, mapped, deadline)
            if pause is None:
                raise mapped
            await self._sleep(pause)
            attempt += 1

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._unary(continuation, client_call_details, request, retry=True)

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        # a request iterator cannot be replayed
        return await self._unary(continuation, client_call_details, request_iterator, retry=False)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        details = self._details(client_call_details, client_call_details.timeout)
        return _mapped(await continuation(details, request), method_name(client_call_details.method))

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        details = self._details(client_call_details, client_call_details.timeout)
        return _mapped(await continuation(details, request_iterator), method_name(client_call_details.method))

    def interceptors(self) -> list[Any]:
        """This interceptor as the four grpc.aio interceptors of a channel (one per kind of call)."""
        return [_UnaryUnary(self), _UnaryStream(self), _StreamUnary(self), _StreamStream(self)]


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, interceptor: AsyncPlexsyncInterceptor) -> None:
        self._interceptor = interceptor

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._interceptor.intercept_unary_unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, interceptor: AsyncPlexsyncInterceptor) -> None:
        self._interceptor = interceptor

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._interceptor.intercept_unary_stream(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, interceptor: AsyncPlexsyncInterceptor) -> None:
        self._interceptor = interceptor

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._interceptor.intercept_stream_unary(continuation, client_call_details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, interceptor: AsyncPlexsyncInterceptor) -> None:
        self._interceptor = interceptor

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._interceptor.intercept_stream_stream(continuation, client_call_details, request_iterator)


async def pages(method: Callable[[Req], Awaitable[Resp]], request: Req) -> AsyncIterator[Resp]:
    """Every page of a List call, following next_page_token until it is empty (the request is not changed)."""
    first = type(request)()
    first.CopyFrom(request)
    current: Req | None = first
    while current is not None:
        response = await method(current)
        yield response
        current = next_page_request(current, response)


async def paginate(method: Callable[[Req], Awaitable[Resp]], request: Req) -> AsyncIterator[Any]:
    """The resources of every page of a List call, one at a time."""
    async for page in pages(method, request):
        for resource in getattr(page, repeated_field(page)):
            yield resource


class AsyncChangeFeed(FeedState[Any]):
    """ChangeFeed for asyncio: item changes in commit order from WatchChanges (`async for change in feed`);
    `resume_token` is the last one yielded.

    When the stream breaks (UNAVAILABLE: the catalog restarted, a network cut), it reconnects with that token, so
    nothing is yielded twice and nothing committed after it is missed. Before the first change there is no token:
    a feed started "from now" that breaks then restarts from the new now (pass from_oldest to lose nothing)."""

    _stub: catalog_pb2_grpc.CatalogServiceAsyncStub  # only in the generated .pyi: not a runtime type argument
    _call: Any = None

    def __aiter__(self) -> AsyncGenerator[common_pb2.ItemChange, None]:
        return self._changes()

    async def _changes(self) -> AsyncGenerator[common_pb2.ItemChange, None]:
        failures = 0
        while not self._closed:
            self._call = self._stub.WatchChanges(self.request())
            try:
                async for response in self._call:
                    failures = 0
                    for change in response.changes:
                        self.resume_token = change.resume_token
                        yield change
                        if self._closed:
                            return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and not (task is not None and task.cancelling()):
                    return  # close() cancelled the call under us, not a cancellation of the task
                raise
            except PlexsyncError as exc:
                if self._closed:
                    return
                failures += 1
                pause = reconnect_pause(self._retry, failures, exc) if self._reconnect else None
                if pause is None:
                    raise
                await asyncio.sleep(pause)
            finally:
                self._call.cancel()
            if not self._reconnect:
                return
            self.reconnects += 1

    def close(self) -> None:
        """End the feed (from another task too); the iteration stops."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()


class AsyncPlexsyncClient(ServiceChannels[grpc.aio.Channel]):
    """PlexsyncClient for asyncio: the same options, stubs, paging, watches and errors over grpc.aio.

    >>> async with AsyncPlexsyncClient(Addresses(catalog="catalog:50051"), token="...", tls=TlsOptions(...)) as c:
    ...     async for item in c.iter_items(catalog_pb2.ListItemsRequest(library_id=lib)): ...

    `catalog`, `auth`, `scanner` and `scheduler` are the generated stubs for grpc.aio (`await` a unary call,
    `async for` a stream); their calls carry the token, get the default deadline, are retried on UNAVAILABLE and
    raise `PlexsyncError` subclasses. Channels are opened on first use, in the running event loop; use a client
    from one event loop only, and close it (`await client.close()`, or `async with`)."""

    def _open_channel(self, target: str) -> grpc.aio.Channel:
        return open_aio_channel(target, self.options)

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
        return cast(
            "catalog_pb2_grpc.CatalogServiceAsyncStub", catalog_pb2_grpc.CatalogServiceStub(self.channel("catalog"))
        )

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceAsyncStub:
        return cast("auth_pb2_grpc.AuthServiceAsyncStub", auth_pb2_grpc.AuthServiceStub(self.channel("auth")))

    @property
    def scanner(self) -> scanner_pb2_grpc.ScannerServiceAsyncStub:
        return cast(
            "scanner_pb2_grpc.ScannerServiceAsyncStub", scanner_pb2_grpc.ScannerServiceStub(self.channel("scanner"))
        )

    @property
    def scheduler(self) -> scheduler_pb2_grpc.SchedulerServiceAsyncStub:
        return cast(
            "scheduler_pb2_grpc.SchedulerServiceAsyncStub",
            scheduler_pb2_grpc.SchedulerServiceStub(self.channel("scheduler")),
        )

    def version(self, service: str) -> version_pb2_grpc.VersionServiceAsyncStub:
        """The VersionService every service serves."""
        return cast(
            "version_pb2_grpc.VersionServiceAsyncStub", version_pb2_grpc.VersionServiceStub(self.channel(service))
        )

    def audit(self, service: str) -> audit_pb2_grpc.AuditServiceAsyncStub:
        """The AuditService every service serves (admin only)."""
        return cast("audit_pb2_grpc.AuditServiceAsyncStub", audit_pb2_grpc.AuditServiceStub(self.channel(service)))

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncPlexsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --------------------------------------------------------------------------------------------- paging
    def iter_items(self, request: catalog_pb2.ListItemsRequest) -> AsyncIterator[common_pb2.Item]:
        """Every item ListItems returns for `request`, across pages."""
        return paginate(self.catalog.ListItems, request)

    def iter_search_results(self, request: catalog_pb2.SearchItemsRequest) -> AsyncIterator[catalog_pb2.SearchResult]:
        return paginate(self.catalog.SearchItems, request)

    def iter_libraries(self, request: catalog_pb2.ListLibrariesRequest) -> AsyncIterator[common_pb2.Library]:
        return paginate(self.catalog.ListLibraries, request)

    def iter_path_replacements(
        self, request: catalog_pb2.ListPathReplacementsRequest
    ) -> AsyncIterator[common_pb2.PathReplacement]:
        return paginate(self.catalog.ListPathReplacements, request)

    def iter_collections(self, request: catalog_pb2.ListCollectionsRequest) -> AsyncIterator[common_pb2.Collection]:
        return paginate(self.catalog.ListCollections, request)

    def iter_networks(self, request: catalog_pb2.ListNetworksRequest) -> AsyncIterator[common_pb2.Network]:
        return paginate(self.catalog.ListNetworks, request)

    def iter_servers(self, request: auth_pb2.ListServersRequest | None = None) -> AsyncIterator[auth_pb2.Server]:
        return paginate(self.auth.ListServers, request or auth_pb2.ListServersRequest())

    def iter_scans(self, request: scanner_pb2.ListScansRequest) -> AsyncIterator[common_pb2.Scan]:
        return paginate(self.scanner.ListScans, request)

    def iter_watchers(self, request: scanner_pb2.ListWatchersRequest) -> AsyncIterator[scanner_pb2.Watcher]:
        return paginate(self.scanner.ListWatchers, request)

    def iter_jobs(self, request: scheduler_pb2.ListJobsRequest) -> AsyncIterator[common_pb2.Job]:
        return paginate(self.scheduler.ListJobs, request)

    def iter_schedules(self, request: scheduler_pb2.ListSchedulesRequest) -> AsyncIterator[scheduler_pb2.Schedule]:
        return paginate(self.scheduler.ListSchedules, request)

    def iter_audit_events(self, service: str, request: audit_pb2.ListAuditEventsRequest) -> AsyncIterator[Any]:
        return paginate(self.audit(service).ListAuditEvents, request)

    # --------------------------------------------------------------------------------------------- watching
    async def watch_scan(self, scan_id: str) -> AsyncIterator[events_pb2.ScanEvent]:
        """A scan's events until it ends (started, progress, item errors, then completed/failed/cancelled)."""
        stream = self.scanner.WatchScan(scanner_pb2.WatchScanRequest(scan_id=scan_id))
        try:
            async for response in stream:
                yield response.event
                if scan_ended(response.event):
                    return
        finally:
            stream.cancel()

    def watch_changes(
        self, *, resume_token: str = "", library_id: str = "", from_oldest: bool = False, reconnect: bool = True
    ) -> AsyncChangeFeed:
        """An AsyncChangeFeed of item changes after `resume_token` (or from now, or from the oldest kept change)."""
        return AsyncChangeFeed(
            self.catalog,
            resume_token=resume_token,
            library_id=library_id,
            from_oldest=from_oldest,
            retry=self.options.retry,
            reconnect=reconnect,
        )
