"""Readiness follows PostgreSQL, liveness does not: a catalog whose database is stopped reports NOT_SERVING within
seconds (Kubernetes stops routing to it) while ``liveness`` stays SERVING (no restart), and SERVING again once
the database is back, with no manual help; what it stored before is still there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plexsync.devstack import infra
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc

from tests.support.stack import ServiceStack, fresh_database

pytestmark = pytest.mark.timeout(180)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    url, _ = infra.start_postgres(data_dir)
    try:
        yield data_dir, url
    finally:
        infra.stop_postgres(data_dir)


@pytest.fixture(scope="module")
def catalog_stack(
    private_postgres: tuple[Path, str], nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    with fresh_database(private_postgres[1]) as database_url:
        stack = ServiceStack(database_url=database_url, nats_url=nats_url, log_dir=tmp_path_factory.mktemp("logs"))
        stack.start("catalog", PLEXSYNC_READINESS_CHECK_SECONDS="0.3")
        try:
            yield stack
        finally:
            stack.stop_all()


async def status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def until(stub: health_pb2_grpc.HealthStub, service: str, wanted: int, within: float) -> float:
    started = time.monotonic()
    while (got := await status(stub, service)) != wanted:
        if time.monotonic() - started > within:
            raise AssertionError(f"{service or 'overall'} health {got}, not {wanted}, after {within}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_readiness_follows_the_database_and_liveness_does_not(
    catalog_stack: ServiceStack, private_postgres: tuple[Path, str]
) -> None:
    data_dir, _ = private_postgres
    channel = catalog_stack.channel("catalog", "cli")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        assert await status(health, "") == SERVING and await status(health, "liveness") == SERVING
        before = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest())
        await asyncio.to_thread(infra.stop_postgres, data_dir)
        noticed = await until(health, "", NOT_SERVING, 10)
        assert await status(health, "plexsync.v1.CatalogService") == NOT_SERVING
        assert await status(health, "liveness") == SERVING  # not a reason to restart the pod
        await asyncio.to_thread(infra.start_postgres, data_dir)
        recovered = await until(health, "", SERVING, 15)
        assert await status(health, "plexsync.v1.CatalogService") == SERVING
        after = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest())
        assert after == before
        assert noticed < 10 and recovered < 15
    finally:
        await channel.close()
