"""gRPC adapters for the scheduler's peers (catalog, scanner, auth), implementing the domain's ports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from plexsync.common.clients import all_pages
from plexsync.common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PlexsyncError,
    UnavailableError,
)
from plexsync.common.grpc_errors import relayed_not_found
from plexsync.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    scanner_pb2,
    scanner_pb2_grpc,
)

T = TypeVar("T")
CALL_TIMEOUT = 30.0
SYNC_SERVER_TIMEOUT = 120.0


def translate(service: str, exc: grpc.aio.AioRpcError) -> PlexsyncError:
    """A peer's status as the domain error that says the same to our caller."""
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return relayed_not_found(service, exc)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPreconditionError(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError.single("request", f"{service}: {details}")
    return UnavailableError(f"the {service} service answered {code.name}: {details}")


async def call(service: str, fn: Callable[..., Awaitable[T]], request: Any, deadline: float = CALL_TIMEOUT) -> T:
    try:
        return await fn(request, timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        raise translate(service, exc) from None


class GrpcCatalog:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = catalog_pb2_grpc.CatalogServiceStub(channel)

    async def get_library(self, library_id: str) -> common_pb2.Library:
        req = catalog_pb2.GetLibraryRequest(library_id=library_id)
        resp: catalog_pb2.GetLibraryResponse = await call("catalog", self._stub.GetLibrary, req)
        return resp.library

    async def list_libraries(self, server_id: str = "") -> list[common_pb2.Library]:
        async def page(token: str) -> tuple[list[common_pb2.Library], str]:
            req = catalog_pb2.ListLibrariesRequest(server_id=server_id, page_size=1000, page_token=token)
            resp = await call("catalog", self._stub.ListLibraries, req)
            return list(resp.libraries), resp.next_page_token

        return await all_pages(page)

    async def update_library(self, library: common_pb2.Library, paths: list[str]) -> common_pb2.Library:
        req = catalog_pb2.UpdateLibraryRequest(library=library, update_mask=field_mask_pb2.FieldMask(paths=paths))
        resp: catalog_pb2.UpdateLibraryResponse = await call("catalog", self._stub.UpdateLibrary, req)
        return resp.library


class GrpcScanner:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = scanner_pb2_grpc.ScannerServiceStub(channel)

    async def sync_server(self, server_id: str) -> None:
        req = scanner_pb2.SyncServerRequest(server_id=server_id)
        await call("scanner", self._stub.SyncServer, req, SYNC_SERVER_TIMEOUT)

    async def get_scan(self, scan_id: str) -> common_pb2.Scan | None:
        try:
            req = scanner_pb2.GetScanRequest(scan_id=scan_id)
            resp: scanner_pb2.GetScanResponse = await call("scanner", self._stub.GetScan, req)
            return resp.scan
        except NotFoundError:
            return None


class GrpcServers:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def server_ids(self) -> list[str]:
        async def page(token: str) -> tuple[list[str], str]:
            resp = await call(
                "auth", self._stub.ListServers, auth_pb2.ListServersRequest(page_size=1000, page_token=token)
            )
            return [s.id for s in resp.servers], resp.next_page_token

        return await all_pages(page)
