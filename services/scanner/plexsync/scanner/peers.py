"""gRPC adapters for the scanner's peers (catalog, auth, scheduler), implementing the domain's ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from plexsync.common.clients import all_pages
from plexsync.common.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError
from plexsync.common.grpc_errors import error_info, relayed_not_found, retry_delay
from plexsync.scanner.manager import PeerError
from plexsync.scanner.plex_client import PlexCredentials
from plexsync.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

T = TypeVar("T")
CALL_TIMEOUT = 30.0
FINISH_TIMEOUT = 900.0
MARK_MISSING_CHUNK = 1000


def _translate(service: str, exc: grpc.aio.AioRpcError) -> Exception:
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return relayed_not_found(service, exc)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPreconditionError(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError.single("request", f"{service}: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and error_info(exc) is not None:
        # The peer answered: what is unavailable is what it needs (auth: the Plex server), not the peer.
        return UnavailableError(f"{service} reports: {details}", retry_after=retry_delay(exc) or 1.0)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(f"{service} is unavailable: {details}")
    return PeerError(service, code.name, details)


async def _call(service: str, fn: Callable[..., Awaitable[T]], request: Any, deadline: float = CALL_TIMEOUT) -> T:
    try:
        return await fn(request, timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        raise _translate(service, exc) from None


class GrpcCatalog:
    """The catalog's scan-facing RPCs."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = catalog_pb2_grpc.CatalogServiceStub(channel)

    async def get_library(self, library_id: str) -> common_pb2.Library:
        req = catalog_pb2.GetLibraryRequest(library_id=library_id)
        resp: catalog_pb2.GetLibraryResponse = await _call("catalog", self._stub.GetLibrary, req)
        return resp.library

    async def list_path_replacements(self, server_id: str) -> list[common_pb2.PathReplacement]:
        async def page(token: str) -> tuple[list[common_pb2.PathReplacement], str]:
            req = catalog_pb2.ListPathReplacementsRequest(server_id=server_id, page_size=1000, page_token=token)
            resp = await _call("catalog", self._stub.ListPathReplacements, req)
            return list(resp.rules), resp.next_page_token

        return await all_pages(page)

    async def item_etags(self, library_id: str) -> AsyncIterator[catalog_pb2.ItemEtag]:
        call = self._stub.GetItemEtags(catalog_pb2.GetItemEtagsRequest(library_id=library_id))
        try:
            async for chunk in call:
                for etag in chunk.etags:
                    yield etag
        except grpc.aio.AioRpcError as exc:
            raise _translate("catalog", exc) from None

    async def write_items(
        self, requests: AsyncIterator[catalog_pb2.WriteItemsRequest]
    ) -> AsyncIterator[catalog_pb2.WriteItemsResponse]:
        call = self._stub.WriteItems(requests)
        try:
            async for ack in call:
                yield ack
        except grpc.aio.AioRpcError as exc:
            raise PeerError("catalog", exc.code().name, exc.details() or "") from None
        finally:
            call.cancel()

    async def finish_scan(self, request: catalog_pb2.FinishScanRequest) -> catalog_pb2.FinishScanResponse:
        # Marks every unseen item of the library: proportional to its size, so give it time.
        return await _call("catalog", self._stub.FinishScan, request, FINISH_TIMEOUT)

    async def register_libraries(
        self, request: catalog_pb2.RegisterLibrariesRequest
    ) -> catalog_pb2.RegisterLibrariesResponse:
        return await _call("catalog", self._stub.RegisterLibraries, request)

    async def list_libraries(self, server_id: str) -> list[common_pb2.Library]:
        async def page(token: str) -> tuple[list[common_pb2.Library], str]:
            req = catalog_pb2.ListLibrariesRequest(server_id=server_id, page_size=1000, page_token=token)
            resp = await _call("catalog", self._stub.ListLibraries, req)
            return list(resp.libraries), resp.next_page_token

        return await all_pages(page)

    async def mark_items_missing(self, library_id: str, rating_keys: list[str]) -> list[common_pb2.ItemChange]:
        changes: list[common_pb2.ItemChange] = []
        for start in range(0, len(rating_keys), MARK_MISSING_CHUNK):
            req = catalog_pb2.MarkItemsMissingRequest(
                library_id=library_id, rating_keys=rating_keys[start : start + MARK_MISSING_CHUNK]
            )
            resp = await _call("catalog", self._stub.MarkItemsMissing, req)
            changes.extend(resp.changes)
        return changes


class GrpcCredentials:
    """Credentials from AuthService (GetServerCredentials is allowed for the scanner identity only)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def credentials(self, server_id: str, *, recheck: bool = False) -> PlexCredentials:
        req = auth_pb2.GetServerCredentialsRequest(server_id=server_id, recheck=recheck)
        resp = await _call("auth", self._stub.GetServerCredentials, req)
        if not resp.base_url:
            raise UnavailableError(f"auth has no reachable connection for server {server_id}; run CheckServer")
        return PlexCredentials(resp.base_url, resp.token, resp.client_identifier or "plexsync-scanner")

    async def server_name(self, server_id: str) -> str:
        resp = await _call("auth", self._stub.GetServer, auth_pb2.GetServerRequest(server_id=server_id))
        return resp.server.name or server_id

    async def server_ids(self) -> list[str]:
        """Every server auth knows (the real-time watchers' work list)."""

        async def page(token: str) -> tuple[list[str], str]:
            resp = await _call(
                "auth", self._stub.ListServers, auth_pb2.ListServersRequest(page_size=1000, page_token=token)
            )
            return [s.id for s in resp.servers], resp.next_page_token

        return await all_pages(page)


class GrpcScheduler:
    """The scheduler's TriggerSync, for the real-time watcher's fallback scans."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)

    async def incremental_scan(self, library_id: str, reason: str) -> None:
        # force: a scan already running may have passed the change; exactly one follow-up is queued behind it.
        req = scheduler_pb2.TriggerSyncRequest(
            library_id=library_id, mode=common_pb2.SCAN_MODE_INCREMENTAL, force=True, reason=reason[:500]
        )
        await _call("scheduler", self._stub.TriggerSync, req)
