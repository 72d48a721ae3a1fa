"""ServiceApp end to end over a real socket: health gating, bearer auth, error mapping, draining shutdown."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from plexsync.common.access import METHOD_POLICY, Role
from plexsync.common.clients import service_channel
from plexsync.common.config import CommonSettings
from plexsync.common.errors import FieldViolation, InvalidArgumentError, NotFoundError
from plexsync.common.grpc_errors import field_violations
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.interceptors import caller_identity
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

SLOW, BOOM, X, L, MISSING = (f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 6))
TOKENS = {"scanner": "tok-scanner-123456", "cli": "tok-cli-123456"}


class _Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    """Just enough of a servicer to exercise the plumbing."""

    async def GetLibrary(self, request: Any, context: Any) -> catalog_pb2.GetLibraryResponse:
        if request.library_id == SLOW:
            await asyncio.sleep(0.6)
            return catalog_pb2.GetLibraryResponse(library=common_pb2.Library(id=SLOW, name=caller_identity.get()))
        if request.library_id == BOOM:
            raise RuntimeError("token=abcdefSECRET123 exploded")
        if request.library_id != MISSING:
            return catalog_pb2.GetLibraryResponse(
                library=common_pb2.Library(id=request.library_id, name=caller_identity.get())
            )
        raise NotFoundError("library", request.library_id, resource_type="plexsync.v1.Library")

    async def ListLibraries(self, request: Any, context: Any) -> catalog_pb2.ListLibrariesResponse:
        raise InvalidArgumentError([FieldViolation("page_size", "too big"), FieldViolation("server_id", "bad")])

    async def GetItemEtags(self, request: Any, context: Any) -> AsyncIterator[catalog_pb2.GetItemEtagsResponse]:
        yield catalog_pb2.GetItemEtagsResponse(etags=[catalog_pb2.ItemEtag(rating_key="1", etag="a")])
        raise NotFoundError("library", request.library_id, resource_type="plexsync.v1.Library")


@pytest.fixture
async def app(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[ServiceApp, asyncio.Event]]:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", ",".join(f"{k}:{v}" for k, v in TOKENS.items()))
    monkeypatch.setenv("PLEXSYNC_GRPC_HOST", "127.0.0.1")
    monkeypatch.setenv("PLEXSYNC_GRPC_INSECURE", "true")
    monkeypatch.setenv("PLEXSYNC_SHUTDOWN_GRACE_SECONDS", "5")
    policy = METHOD_POLICY | {"/plexsync.v1.CatalogService/ListLibraries": frozenset({Role.SCANNER})}
    service = ServiceApp("test", CommonSettings(), policy=policy)
    service.add_service("plexsync.v1.CatalogService", catalog_pb2_grpc.add_CatalogServiceServicer_to_server, _Catalog())  # type: ignore[abstract]
    gate = asyncio.Event()

    async def ready() -> None:
        await gate.wait()

    runner = asyncio.create_task(service.run(ready))
    await asyncio.wait_for(service.started.wait(), 10)
    yield service, gate
    service.request_stop()
    await asyncio.wait_for(runner, 10)


async def _health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        return int(reply.status)


async def test_health_not_serving_until_ready(app: tuple[ServiceApp, asyncio.Event]) -> None:
    service, gate = app
    gc.unfreeze()
    assert await _health(service.port) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert gc.get_freeze_count() == 0
    gate.set()
    for _ in range(100):
        if await _health(service.port) == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.02)
    assert await _health(service.port) == health_pb2.HealthCheckResponse.SERVING
    assert gc.get_freeze_count() > 0  # the startup heap is out of the collector's way once ready
    gc.unfreeze()


async def test_reflection_lists_service_without_token(app: tuple[ServiceApp, asyncio.Event]) -> None:
    service, _ = app
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: list[str] = []
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = [s.name for s in reply.list_services_response.service]
    assert "plexsync.v1.CatalogService" in names


async def test_bearer_auth(app: tuple[ServiceApp, asyncio.Event]) -> None:
    service, _ = app
    address = f"127.0.0.1:{service.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await catalog_pb2_grpc.CatalogServiceStub(channel).GetLibrary(catalog_pb2.GetLibraryRequest(library_id=X))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with service_channel(address, "wrong-token") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await catalog_pb2_grpc.CatalogServiceStub(channel).GetLibrary(catalog_pb2.GetLibraryRequest(library_id=X))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with service_channel(address, TOKENS["cli"]) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        reply = await stub.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=X))
        assert reply.library.name == "cli"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListLibraries(catalog_pb2.ListLibrariesRequest())
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "cli" in (info.value.details() or "")


async def test_errors_map_to_canonical_codes(app: tuple[ServiceApp, asyncio.Event]) -> None:
    service, _ = app
    async with service_channel(f"127.0.0.1:{service.port}", TOKENS["scanner"]) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListLibraries(catalog_pb2.ListLibrariesRequest())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(info.value) == [("page_size", "too big"), ("server_id", "bad")]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=MISSING))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=BOOM))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "SECRET" not in (info.value.details() or "")
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for chunk in stub.GetItemEtags(catalog_pb2.GetItemEtagsRequest(library_id=L)):
                received.append(chunk)
        assert len(received) == 1
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_shutdown_drains_in_flight_calls(app: tuple[ServiceApp, asyncio.Event]) -> None:
    service, gate = app
    gate.set()
    async with service_channel(f"127.0.0.1:{service.port}", TOKENS["cli"]) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=SLOW)))
        await asyncio.sleep(0.2)
        service.request_stop()
        reply = await asyncio.wait_for(in_flight, 5)
        assert reply.library.id == SLOW
