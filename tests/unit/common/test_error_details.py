"""AIP-193 error details: every error names a stable reason and the service's domain; NOT_FOUND names the
resource, UNAVAILABLE and RESOURCE_EXHAUSTED say when to retry. Checked on the wire, through a real ServiceApp."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from plexsync.common import errors
from plexsync.common.clients import service_channel
from plexsync.common.config import CommonSettings
from plexsync.common.grpc_errors import error_info, field_violations, resource_info, retry_delay
from plexsync.common.grpc_server import ServiceApp
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

TOKEN = "tok-cli-error-details"


def _id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


IDS = {
    name: _id(i)
    for i, name in enumerate(
        ["missing", "invalid", "down", "busy", "exists", "state", "race", "denied", "late", "stopped", "boom"]
    )
}

RAISED: dict[str, errors.PlexsyncError] = {
    "missing": errors.NotFoundError("library", _id(99), resource_type="plexsync.v1.Library"),
    "invalid": errors.InvalidArgumentError.single("library_id", "must be a UUID"),
    "down": errors.UnavailableError("Plex is unreachable; try again", retry_after=2.5),
    "busy": errors.ResourceExhaustedError("too many calls; slow down", retry_after=0.25),
    "exists": errors.AlreadyExistsError("server exists"),
    "state": errors.FailedPreconditionError("a scan is running"),
    "race": errors.AbortedError("lost a race"),
    "denied": errors.PermissionDeniedError("not for you"),
    "late": errors.DeadlineExceededError("too slow"),
    "stopped": errors.CancelledError("cancelled"),
}


class _Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    async def GetLibrary(self, request: Any, context: Any) -> catalog_pb2.GetLibraryResponse:
        if request.library_id == IDS["boom"]:
            raise RuntimeError("unexpected")
        for name, library_id in IDS.items():
            if request.library_id == library_id and name in RAISED:
                raise RAISED[name]
        return catalog_pb2.GetLibraryResponse(library=common_pb2.Library(id=request.library_id))


@pytest.fixture
async def stub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceStub]:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", f"cli:{TOKEN}")
    monkeypatch.setenv("PLEXSYNC_GRPC_HOST", "127.0.0.1")
    monkeypatch.setenv("PLEXSYNC_GRPC_INSECURE", "true")
    service = ServiceApp("catalog", CommonSettings())
    service.add_service("plexsync.v1.CatalogService", catalog_pb2_grpc.add_CatalogServiceServicer_to_server, _Catalog())  # type: ignore[abstract]
    runner = asyncio.create_task(service.run())
    await asyncio.wait_for(service.started.wait(), 30)
    async with service_channel(f"127.0.0.1:{service.port}", TOKEN) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)
    service.request_stop()
    await asyncio.wait_for(runner, 30)


async def _error(stub: catalog_pb2_grpc.CatalogServiceStub, name: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=IDS[name]), timeout=30)
    return info.value


async def test_every_error_has_error_info_with_reason_and_domain(stub: catalog_pb2_grpc.CatalogServiceStub) -> None:
    reasons = {}
    for key, exc in RAISED.items():
        error = await _error(stub, key)
        info = error_info(error)
        assert info is not None, key
        assert info.domain == "catalog.plexsync.dev"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", info.reason), info.reason
        assert info.reason == exc.reason
        reasons[key] = info.reason
    assert len(set(reasons.values())) == len(reasons)  # one reason per error kind
    assert reasons["missing"] == "RESOURCE_NOT_FOUND"
    internal = await _error(stub, "boom")
    assert internal.code() == grpc.StatusCode.INTERNAL
    info = error_info(internal)
    assert info is not None and (info.reason, info.domain) == ("INTERNAL_ERROR", "catalog.plexsync.dev")


async def test_not_found_names_the_resource(stub: catalog_pb2_grpc.CatalogServiceStub) -> None:
    error = await _error(stub, "missing")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    resource = resource_info(error)
    assert resource is not None
    assert (resource.resource_type, resource.resource_name) == ("plexsync.v1.Library", _id(99))
    assert retry_delay(error) is None


async def test_retry_info_on_unavailable_and_resource_exhausted(stub: catalog_pb2_grpc.CatalogServiceStub) -> None:
    down = await _error(stub, "down")
    assert down.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_delay(down) == 2.5
    busy = await _error(stub, "busy")
    assert busy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(busy) == 0.25
    assert retry_delay(await _error(stub, "state")) is None
    assert errors.UnavailableError("x").retry_after == errors.DEFAULT_RETRY_AFTER_SECONDS


async def test_invalid_argument_keeps_field_violations(stub: catalog_pb2_grpc.CatalogServiceStub) -> None:
    error = await _error(stub, "invalid")
    assert field_violations(error) == [("library_id", "must be a UUID")]
    assert resource_info(error) is None
