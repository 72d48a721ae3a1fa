"""Reflection answers under grpc.reflection.v1 and v1alpha, to real reflection clients: `buf curl` (which a
foreign developer uses) with each protocol, and grpcio-reflection's own v1alpha client."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from plexsync.common.config import CommonSettings
from plexsync.common.grpc_server import ServiceApp
from plexsync.common.reflection import V1_SERVICE, V1ALPHA_SERVICE
from plexsync.v1 import catalog_pb2_grpc

BUF = Path(__file__).resolve().parents[3] / "node_modules" / ".bin" / "buf"


@pytest.fixture
async def port(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setenv("PLEXSYNC_SERVICE_TOKENS", "cli:tok-cli-reflection")
    monkeypatch.setenv("PLEXSYNC_GRPC_HOST", "127.0.0.1")
    monkeypatch.setenv("PLEXSYNC_GRPC_INSECURE", "true")
    service = ServiceApp("catalog", CommonSettings())
    service.add_service(
        "plexsync.v1.CatalogService",
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
        catalog_pb2_grpc.CatalogServiceServicer(),  # type: ignore[abstract]
    )
    runner = asyncio.create_task(service.run())
    await asyncio.wait_for(service.started.wait(), 30)
    yield service.port
    service.request_stop()
    await asyncio.wait_for(runner, 30)


async def _buf_curl(port: int, protocol: str, *args: str) -> list[str]:
    assert BUF.exists(), f"{BUF} is missing: `make lint` (or npm install @bufbuild/buf@1) installs it"
    proc = await asyncio.create_subprocess_exec(
        str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol,
        *args, f"http://127.0.0.1:{port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode().split()


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_buf_curl_lists_services_and_methods(port: int, protocol: str) -> None:
    services = await _buf_curl(port, protocol, "--list-services")
    assert {"plexsync.v1.CatalogService", "grpc.health.v1.Health", V1_SERVICE, V1ALPHA_SERVICE} <= set(services)
    methods = await _buf_curl(port, protocol, "--list-methods")
    assert "plexsync.v1.CatalogService/ListItems" in methods
    assert f"{V1_SERVICE}/ServerReflectionInfo" in methods  # v1 describes itself too


def _resolve(port: int) -> tuple[list[str], str, list[str]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        found = database.FindFileContainingSymbol("plexsync.v1.CatalogService")
        return list(database.get_services()), found.package, [m.name for m in found.service[0].method]


async def test_grpcio_v1alpha_client_resolves_a_service(port: int) -> None:
    services, package, methods = await asyncio.to_thread(_resolve, port)  # a blocking client: off the server's loop
    assert "plexsync.v1.CatalogService" in services
    assert package == "plexsync.v1"
    assert "ListItems" in methods
