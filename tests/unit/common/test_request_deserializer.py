"""Bytes that are not a valid request answer INVALID_ARGUMENT with a clear message, for every RPC shape.

Over a real socket with ServiceApp's interceptors, because grpc.aio deserializes outside the handler: what used to
come back was UNKNOWN with "Unexpected <class 'google.protobuf.message.DecodeError'>" and an ERROR traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from plexsync.common.clients import service_channel
from plexsync.common.config import CommonSettings
from plexsync.common.errors import FieldViolation, InvalidArgumentError
from plexsync.common.grpc_errors import MAX_MESSAGE_BYTES, clip, to_rpc_status
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.interceptors import Undecodable, tolerant_deserializer
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

TOKEN = "tok-cli-123456789"
BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (a string) holding invalid UTF-8
CORRUPT = b"\xff\xff\xff\xff"
SERVICE = "/plexsync.v1.CatalogService/"


class _Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    """One method of each shape; each records what reached it."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def GetLibrary(self, request: Any, context: Any) -> catalog_pb2.GetLibraryResponse:
        self.seen.append(request)
        return catalog_pb2.GetLibraryResponse(library=common_pb2.Library(id=request.library_id))

    async def GetItemEtags(self, request: Any, context: Any) -> AsyncIterator[catalog_pb2.GetItemEtagsResponse]:
        self.seen.append(request)
        yield catalog_pb2.GetItemEtagsResponse()

    async def WriteItems(self, request_iterator: Any, context: Any) -> AsyncIterator[catalog_pb2.WriteItemsResponse]:
        async for request in request_iterator:
            self.seen.append(request)
            yield catalog_pb2.WriteItemsResponse()


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[int, _Catalog]]:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", f"tester@admin+scanner:{TOKEN}")  # may call every method
    monkeypatch.setenv("PLEXSYNC_GRPC_HOST", "127.0.0.1")
    monkeypatch.setenv("PLEXSYNC_GRPC_INSECURE", "true")
    monkeypatch.setenv("PLEXSYNC_SHUTDOWN_GRACE_SECONDS", "1")
    service = ServiceApp("test", CommonSettings())
    servicer = _Catalog()  # type: ignore[abstract]
    service.add_service("plexsync.v1.CatalogService", catalog_pb2_grpc.add_CatalogServiceServicer_to_server, servicer)
    runner = asyncio.create_task(service.run())
    await asyncio.wait_for(service.started.wait(), 10)
    yield service.port, servicer
    service.request_stop()
    await asyncio.wait_for(runner, 10)


def test_the_wrapper_turns_a_decode_error_into_a_value_naming_the_message() -> None:
    decode = tolerant_deserializer(catalog_pb2.GetLibraryRequest.FromString, "plexsync.v1.GetLibraryRequest")
    assert decode(catalog_pb2.GetLibraryRequest(library_id="x").SerializeToString()).library_id == "x"
    bad = decode(BAD_UTF8)
    assert isinstance(bad, Undecodable)
    assert bad.size == len(BAD_UTF8)
    assert bad.description() == "the request is not a valid plexsync.v1.GetLibraryRequest: string field had bad UTF-8"
    corrupt = decode(CORRUPT)
    assert isinstance(corrupt, Undecodable)
    assert corrupt.reason == "wire format was corrupt"


def _assert_clean_rejection(error: grpc.aio.AioRpcError, message: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith(f"the request is not a valid plexsync.v1.{message}: ")
    assert "class" not in details and "DecodeError" not in details


async def test_every_rpc_shape_answers_invalid_argument_and_logs_a_warning_only(
    served: tuple[int, _Catalog], caplog: pytest.LogCaptureFixture
) -> None:
    port, servicer = served
    caplog.set_level(logging.INFO)
    async with service_channel(f"127.0.0.1:{port}", TOKEN) as channel:
        unary = channel.unary_unary(SERVICE + "GetLibrary")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(BAD_UTF8)
        _assert_clean_rejection(info.value, "GetLibraryRequest")

        server_stream = channel.unary_stream(SERVICE + "GetItemEtags")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in server_stream(CORRUPT):
                pass
        _assert_clean_rejection(info.value, "GetItemEtagsRequest")

        # A good message first, then junk: the handler sees only the good one and the stream ends INVALID_ARGUMENT.
        good = catalog_pb2.WriteItemsRequest(library_id="00000000-0000-4000-8000-000000000001").SerializeToString()
        bidi = channel.stream_stream(SERVICE + "WriteItems")
        replies = 0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in bidi(iter([good, BAD_UTF8, good])):
                replies += 1
        _assert_clean_rejection(info.value, "WriteItemsRequest")
        assert replies <= 1

        # The service is fine afterwards: a valid call gets through.
        reply = await unary(
            catalog_pb2.GetLibraryRequest(library_id="00000000-0000-4000-8000-000000000002").SerializeToString()
        )
        assert catalog_pb2.GetLibraryResponse.FromString(reply).library.id == "00000000-0000-4000-8000-000000000002"

    assert [type(r).__name__ for r in servicer.seen] == ["WriteItemsRequest", "GetLibraryRequest"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "not a valid" in r.getMessage()]
    assert len(warnings) == 3
    assert all("\\xff" not in r.getMessage() and r.exc_info is None for r in warnings)


async def test_authentication_is_checked_before_the_bytes(served: tuple[int, _Catalog]) -> None:
    port, _ = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(SERVICE + "GetLibrary")(BAD_UTF8)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_rejects_junk_too(served: tuple[int, _Catalog]) -> None:
    port, _ = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/grpc.health.v1.Health/Check")(CORRUPT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "grpc.health.v1.HealthCheckRequest" in (info.value.details() or "")


def test_an_error_quoting_a_huge_input_stays_under_the_clients_metadata_limit() -> None:
    """Over ~8 KiB of trailers a client reports RESOURCE_EXHAUSTED instead of the real status."""
    assert clip("é" * 10, 7) == "éé…"
    assert clip("short", 100) == "short"
    huge = "é" * 100_000
    status = to_rpc_status(
        InvalidArgumentError([FieldViolation(f"paths[{i}]", f"unknown {huge}") for i in range(5000)])
    )
    trailers = dict(status.trailing_metadata)
    assert len(status.details.encode()) <= MAX_MESSAGE_BYTES
    assert len(trailers["grpc-status-details-bin"]) < 5000
