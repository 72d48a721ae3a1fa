"""Server-side limits of the shared bootstrap, over a real socket: per-caller rate limits with RetryInfo, deadlines
that stop the handler's work, and the validation layer answering before a handler runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from plexsync.common.clients import service_channel
from plexsync.common.config import CommonSettings
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.limits import RateLimiter
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

TOKENS = {"reader": "tok-reader-123456", "scanner": "tok-scanner-123456", "scheduler": "tok-scheduler-123456"}
LIBRARY = "123e4567-e89b-12d3-a456-426614174000"


class _Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = asyncio.Event()

    async def GetLibrary(self, request: Any, context: Any) -> catalog_pb2.GetLibraryResponse:
        self.calls += 1
        return catalog_pb2.GetLibraryResponse(library=common_pb2.Library(id=request.library_id))

    async def GetLibraryStats(self, request: Any, context: Any) -> catalog_pb2.GetLibraryStatsResponse:
        try:
            await asyncio.sleep(30)  # stands for a long query
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return catalog_pb2.GetLibraryStatsResponse()


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # callers have buckets of their own
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[int, _Catalog]]:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", ",".join(f"{k}:{v}" for k, v in TOKENS.items()))
    monkeypatch.setenv("PLEXSYNC_GRPC_HOST", "127.0.0.1")
    monkeypatch.setenv("PLEXSYNC_GRPC_INSECURE", "true")
    monkeypatch.setenv("PLEXSYNC_RATE_LIMIT_PER_SECOND", "2")
    monkeypatch.setenv("PLEXSYNC_RATE_LIMIT_BURST", "3")
    monkeypatch.setenv("PLEXSYNC_RATE_LIMIT_ROLES", "reader")
    app = ServiceApp("test", CommonSettings())
    servicer = _Catalog()  # type: ignore[abstract]
    app.add_service("plexsync.v1.CatalogService", catalog_pb2_grpc.add_CatalogServiceServicer_to_server, servicer)

    async def ready() -> None:
        return None

    runner = asyncio.create_task(app.run(ready))
    await asyncio.wait_for(app.started.wait(), 10)
    yield app.port, servicer
    app.request_stop()
    await asyncio.wait_for(runner, 10)


async def test_a_caller_over_its_rate_gets_resource_exhausted_with_retry_info(served: tuple[int, _Catalog]) -> None:
    port, servicer = served
    request = catalog_pb2.GetLibraryRequest(library_id=LIBRARY)
    async with service_channel(f"127.0.0.1:{port}", TOKENS["reader"]) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        for _ in range(3):
            await stub.GetLibrary(request)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetLibrary(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'reader' is over its rate of 2 calls a second" in (info.value.details() or "")
    status = rpc_status.from_call(info.value)
    assert status is not None
    kinds = {d.type_url.rsplit("/", 1)[1]: d for d in status.details}
    retry = error_details_pb2.RetryInfo()
    kinds["google.rpc.RetryInfo"].Unpack(retry)
    assert 0 < retry.retry_delay.ToMilliseconds() <= 500
    reason = error_details_pb2.ErrorInfo()
    kinds["google.rpc.ErrorInfo"].Unpack(reason)
    assert reason.reason == "RATE_LIMITED"
    assert servicer.calls == 3  # the refused call never reached the handler
    async with service_channel(f"127.0.0.1:{port}", TOKENS["scanner"]) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        for _ in range(10):  # roles outside PLEXSYNC_RATE_LIMIT_ROLES are not limited
            await stub.GetLibrary(request)


async def test_work_stops_when_the_callers_deadline_passes(served: tuple[int, _Catalog]) -> None:
    port, servicer = served
    async with service_channel(f"127.0.0.1:{port}", TOKENS["scheduler"]) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetLibraryStats(catalog_pb2.GetLibraryStatsRequest(), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(servicer.cancelled.wait(), 5)  # the handler was cancelled, not left running
    assert time.monotonic() - started < 5


async def test_invalid_requests_never_reach_the_handler(served: tuple[int, _Catalog]) -> None:
    port, servicer = served
    async with service_channel(f"127.0.0.1:{port}", TOKENS["scanner"]) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetLibrary(catalog_pb2.GetLibraryRequest(library_id="not-a-uuid"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "library_id: must be a UUID like 123e4567-e89b-12d3-a456-426614174000"
    assert servicer.calls == 0
