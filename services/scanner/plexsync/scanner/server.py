"""Thin gRPC servicer for ScannerService: validate, call the ScanManager, return."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypeAlias

from plexsync.common.errors import InvalidArgumentError, UnavailableError, parse_uuid
from plexsync.common.pagination import decode_token, encode_token, filters_fingerprint, page_size
from plexsync.scanner.diagnostics import test_paths
from plexsync.scanner.manager import ScanManager
from plexsync.scanner.realtime.leases import WatchLeases
from plexsync.scanner.rules.dry_run import test_rules
from plexsync.v1 import common_pb2, scanner_pb2, scanner_pb2_grpc

# grpc ships no type hints; handlers receive a grpc.aio.ServicerContext.
Context: TypeAlias = Any
MAX_ID_LENGTH = 64


class ScannerServicer(scanner_pb2_grpc.ScannerServiceServicer):
    def __init__(self) -> None:
        self._manager: ScanManager | None = None
        self._leases: WatchLeases | None = None

    def attach(self, manager: ScanManager, leases: WatchLeases | None = None) -> None:
        self._manager, self._leases = manager, leases

    @property
    def manager(self) -> ScanManager:
        if self._manager is None:
            raise UnavailableError("the scanner is starting; try again shortly")
        return self._manager

    async def SyncServer(
        self, request: scanner_pb2.SyncServerRequest, context: Context
    ) -> scanner_pb2.SyncServerResponse:
        resp = await self.manager.sync_server(request.server_id)
        return scanner_pb2.SyncServerResponse(
            libraries=resp.libraries, added=resp.added, updated=resp.updated, removed=resp.removed
        )

    async def ScanLibrary(
        self, request: scanner_pb2.ScanLibraryRequest, context: Context
    ) -> scanner_pb2.ScanLibraryResponse:
        scan = await self.manager.start_scan(
            request.library_id, request.mode, force=request.force, job_id=request.job_id
        )
        return scanner_pb2.ScanLibraryResponse(scan=scan)

    async def GetScan(self, request: scanner_pb2.GetScanRequest, context: Context) -> scanner_pb2.GetScanResponse:
        return scanner_pb2.GetScanResponse(scan=await self.manager.get_scan(request.scan_id))

    async def ListScans(self, request: scanner_pb2.ListScansRequest, context: Context) -> scanner_pb2.ListScansResponse:
        size = page_size(request.page_size)
        parse_uuid(request.library_id, "library_id", required=False)
        if request.status and request.status not in common_pb2.ScanStatus.values():
            raise InvalidArgumentError.single("status", f"unknown scan status {request.status}")
        fingerprint = filters_fingerprint("scans", request.library_id, request.status)
        last = decode_token(request.page_token, fingerprint)
        after = None
        if last is not None:
            try:
                after = (datetime.fromisoformat(str(last[0])), uuid.UUID(str(last[1])))
            except (ValueError, IndexError) as exc:
                raise InvalidArgumentError.single("page_token", "is not a token returned by ListScans") from exc
        scans = await self.manager.list_scans(
            library_id=request.library_id, status=request.status, limit=size + 1, after=after
        )
        token = ""
        if len(scans) > size:
            scans = scans[:size]
            tail = scans[-1]
            token = encode_token([tail.create_time.ToDatetime().isoformat() + "+00:00", tail.id], fingerprint)
        return scanner_pb2.ListScansResponse(scans=scans, next_page_token=token)

    async def CancelScan(
        self, request: scanner_pb2.CancelScanRequest, context: Context
    ) -> scanner_pb2.CancelScanResponse:
        return scanner_pb2.CancelScanResponse(scan=await self.manager.cancel_scan(request.scan_id))

    async def WatchScan(
        self, request: scanner_pb2.WatchScanRequest, context: Context
    ) -> AsyncIterator[scanner_pb2.WatchScanResponse]:
        async for event in self.manager.watch(request.scan_id):
            yield scanner_pb2.WatchScanResponse(event=event)

    async def ListWatchers(
        self, request: scanner_pb2.ListWatchersRequest, context: Context
    ) -> scanner_pb2.ListWatchersResponse:
        size = page_size(request.page_size)
        if request.server_id and len(request.server_id) > MAX_ID_LENGTH:
            raise InvalidArgumentError.single("server_id", f"must be at most {MAX_ID_LENGTH} characters")
        if self._leases is None:
            raise UnavailableError("the scanner is starting; try again shortly")
        fingerprint = filters_fingerprint("watchers", request.server_id)
        last = decode_token(request.page_token, fingerprint)
        watchers = await self._leases.list(request.server_id)
        if last is not None:
            watchers = [w for w in watchers if w.server_id > str(last[0])]
        token = ""
        if len(watchers) > size:
            watchers = watchers[:size]
            token = encode_token([watchers[-1].server_id], fingerprint)
        return scanner_pb2.ListWatchersResponse(watchers=watchers, next_page_token=token)

    async def TestPaths(self, request: scanner_pb2.TestPathsRequest, context: Context) -> scanner_pb2.TestPathsResponse:
        return await test_paths(self.manager, request.library_id, request.sample_size)

    async def TestRules(self, request: scanner_pb2.TestRulesRequest, context: Context) -> scanner_pb2.TestRulesResponse:
        return await test_rules(self.manager, request.library_id, request.expression, request.sample_size)
