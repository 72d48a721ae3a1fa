"""Calls from one service channel spread over every address its target resolves to (client-side round_robin).

On Kubernetes a headless Service's DNS name resolves to every ready pod; here one target resolves to two real
catalog processes listening on the same port of 127.0.0.1 and 127.0.0.2. Each process has a database of its own
holding one library named after it, so a ListLibraries reply says which replica answered it.
"""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from plexsync.common.clients import bearer_interceptors, channel_target, service_channel
from plexsync.devstack.process import ChildProcess, spawn, wait_healthy
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc

from tests.integration.catalog.helpers import section
from tests.support.stack import ServiceStack, fresh_database

HOSTS = ("127.0.0.1", "127.0.0.2")
CALLS = 40


def _port_free_on_both_hosts() -> int:
    """A port nothing listens on at either loopback address (the two replicas share it, as pods share theirs)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((HOSTS[0], 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind((HOSTS[1], port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free on both loopback addresses")


@pytest.fixture(scope="module")
def replicas(
    database_server_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, ServiceStack]]:
    """Two catalog processes on HOSTS at one port, each on its own database; (port, the stack giving tokens)."""
    log_dir = Path(tmp_path_factory.mktemp("lb-logs"))
    port = _port_free_on_both_hosts()
    children: list[ChildProcess] = []
    with ExitStack() as stack:
        services: ServiceStack | None = None
        for host in HOSTS:
            database_url = stack.enter_context(fresh_database(database_server_url))
            services = services or ServiceStack(database_url=database_url, nats_url=nats_url, log_dir=log_dir)
            env = {
                **services.env("catalog"),
                "DATABASE_URL": database_url,
                "PLEXSYNC_GRPC_HOST": host,
                "PLEXSYNC_GRPC_PORT": str(port),
                "OTEL_SERVICE_NAME": "catalog",
                "PLEXSYNC_GRPC_INSECURE": "true",
            }
            child = spawn("catalog", ["-m", "plexsync.catalog"], env, log_dir / f"catalog-{host}.log")
            children.append(child)
            wait_healthy(f"{host}:{port}", pid=child.pid, log_file=child.log_file, timeout=90)
        assert services is not None
        try:
            yield port, services
        finally:
            for child in children:
                child.stop()


async def _name_each_replica(port: int, token: str) -> None:
    for host in HOSTS:
        async with service_channel(f"{host}:{port}", token) as channel:
            await catalog_pb2_grpc.CatalogServiceStub(channel).RegisterLibraries(
                catalog_pb2.RegisterLibrariesRequest(
                    server_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, host)),
                    server_name=host,
                    sections=[section("1", host)],
                )
            )


async def _who_answers(stub: catalog_pb2_grpc.CatalogServiceStub) -> Counter[str]:
    answered: Counter[str] = Counter()
    for _ in range(CALLS):
        reply = await stub.ListLibraries(catalog_pb2.ListLibrariesRequest(), wait_for_ready=True)
        answered.update(library.name for library in reply.libraries)
    return answered


def test_targets_without_a_scheme_are_resolved_by_dns() -> None:
    assert (
        channel_target("catalog.plexsync.svc.cluster.local:50051") == "dns:///catalog.plexsync.svc.cluster.local:50051"
    )
    assert channel_target("127.0.0.1:50052") == "dns:///127.0.0.1:50052"
    for explicit in ("dns:///catalog:50051", "ipv4:127.0.0.1:1,127.0.0.2:1", "unix:/run/catalog.sock"):
        assert channel_target(explicit) == explicit


async def test_calls_from_one_service_channel_spread_over_both_replicas(replicas: tuple[int, ServiceStack]) -> None:
    port, services = replicas
    await _name_each_replica(port, services.tokens["scanner"])  # the scanner registers libraries
    token = services.tokens["cli"]
    one_name = f"ipv4:{HOSTS[0]}:{port},{HOSTS[1]}:{port}"

    async with service_channel(one_name, token) as channel:
        answered = await _who_answers(catalog_pb2_grpc.CatalogServiceStub(channel))
    assert set(answered) == set(HOSTS), answered
    assert sum(answered.values()) == CALLS
    # round_robin takes the ready subchannels in turn: an even split, give or take the first calls made while
    # the second connection was still being set up.
    assert min(answered.values()) >= CALLS // 4, answered

    # Without it (gRPC's default pick_first), the same name sends every call down one connection: the
    # ClusterIP-style pinning the headless Services and round_robin are there to avoid.
    async with grpc.aio.insecure_channel(
        one_name, interceptors=bearer_interceptors(token), options=[("grpc.enable_retries", 0)]
    ) as pinned:
        answered = await _who_answers(catalog_pb2_grpc.CatalogServiceStub(pinned))
    assert len(answered) == 1 and sum(answered.values()) == CALLS, answered
