"""gRPC over TLS against real catalog processes: the right CA connects; a wrong CA, no CA (plaintext) and, under
mTLS, a missing or foreign client certificate are refused; the certificate is reloaded from its files without a
restart; a service with neither a certificate nor PLEXSYNC_GRPC_INSECURE=true refuses to start."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plexsync.common.clients import service_channel
from plexsync.common.tls import PLAIN_TCP_ENV, DevCertificateAuthority, channel_credentials_from_files
from plexsync.devstack.infra import free_port
from plexsync.devstack.process import ChildProcess, ServiceStartError, start_service

from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(180)
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory) -> ServiceStack:
    """A catalog serving TLS (no client certificates asked), certificates from a dev CA."""
    service_stack.use_tls(Path(tmp_path_factory.mktemp("tls")))
    service_stack.start("catalog")
    return service_stack


@pytest.fixture(scope="module")
def mtls_catalog(stack: ServiceStack) -> Iterator[ChildProcess]:
    """A second catalog on the same database that requires a client certificate from the stack's CA."""
    env = {**stack.env("catalog"), "PLEXSYNC_TLS_CLIENT_AUTH": "require"}
    child = start_service("catalog", free_port(), env, stack.log_dir / "mtls")
    try:
        yield child
    finally:
        child.stop()


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCertificateAuthority:
    return DevCertificateAuthority(Path(tmp_path_factory.mktemp("foreign")), common_name="someone else's CA")


async def health(address: str, token: str, credentials: grpc.ChannelCredentials | None) -> int:
    async with service_channel(address, token, credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
        return int(reply.status)


async def refused(address: str, token: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health(address, token, credentials)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    return info.value


def served_certificate(address: str, ca_file: Path) -> x509.Certificate:
    """The certificate a new TLS handshake with `address` is shown (verified against `ca_file`)."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_the_right_ca_connects(stack: ServiceStack) -> None:
    assert stack.ca is not None
    async with stack.channel("catalog", "cli") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
    assert reply.status == SERVING
    served = served_certificate(stack.addresses["catalog"], stack.ca.ca_file)
    expected = x509.load_pem_x509_certificate(stack.cert("catalog").cert_file.read_bytes())
    assert served.serial_number == expected.serial_number


async def test_a_wrong_ca_or_plaintext_is_refused(stack: ServiceStack, foreign_ca: DevCertificateAuthority) -> None:
    address, token = stack.addresses["catalog"], stack.tokens["cli"]
    await refused(address, token, channel_credentials_from_files(str(foreign_ca.ca_file)))
    await refused(address, token, None)  # a plaintext client against a TLS port


async def test_the_health_port_answers_probes_on_plain_tcp_and_serves_nothing_else(stack: ServiceStack) -> None:
    """PLEXSYNC_HEALTH_PORT: what the kubelet's gRPC probes use when the service port needs (m)TLS."""
    health_port = free_port()
    env = {**stack.env("catalog"), "PLEXSYNC_TLS_CLIENT_AUTH": "require", "PLEXSYNC_HEALTH_PORT": str(health_port)}
    child = start_service("catalog", free_port(), env, stack.log_dir / "health-port")
    try:
        address = f"127.0.0.1:{health_port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=15)).status == SERVING
            liveness = await stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=15)
            assert liveness.status == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/plexsync.v1.CatalogService/ListLibraries")(b"", timeout=15)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        child.stop()


async def test_mtls_requires_a_client_certificate_from_the_ca(
    stack: ServiceStack, mtls_catalog: ChildProcess, foreign_ca: DevCertificateAuthority
) -> None:
    assert stack.ca is not None
    address, token, ca = mtls_catalog.address, stack.tokens["cli"], str(stack.ca.ca_file)
    await refused(address, token, channel_credentials_from_files(ca))
    stranger = foreign_ca.issue("cli")
    await refused(address, token, channel_credentials_from_files(ca, str(stranger.cert_file), str(stranger.key_file)))
    cli = stack.cert("cli")
    assert (
        await health(address, token, channel_credentials_from_files(ca, str(cli.cert_file), str(cli.key_file)))
        == SERVING
    )
    assert await health(stack.addresses["catalog"], token, channel_credentials_from_files(ca)) == SERVING, (
        "the catalog without PLEXSYNC_TLS_CLIENT_AUTH=require still takes clients without a certificate"
    )


async def test_a_rotated_certificate_is_served_without_a_restart(stack: ServiceStack) -> None:
    assert stack.ca is not None
    address, child = stack.addresses["catalog"], stack.children[0]
    pair = stack.cert("catalog")
    before = served_certificate(address, stack.ca.ca_file)

    good = pair.cert_file.read_bytes()
    pair.cert_file.write_text("half-written\n")
    assert served_certificate(address, stack.ca.ca_file).serial_number == before.serial_number, (
        "an unusable file keeps the certificate that works"
    )
    pair.cert_file.write_bytes(good)

    stack.ca.issue("catalog")  # the same files, a new certificate and key (like a Secret update)
    rotated = x509.load_pem_x509_certificate(pair.cert_file.read_bytes())
    assert rotated.serial_number != before.serial_number
    assert served_certificate(address, stack.ca.ca_file).serial_number == rotated.serial_number
    assert await health(address, stack.tokens["cli"], channel_credentials_from_files(str(stack.ca.ca_file))) == SERVING
    assert child.alive(), "no restart"
    logged = [json.loads(line) for line in child.log_file.read_text().splitlines() if line.startswith("{")]
    assert any(r["message"] == "TLS certificate reloaded" for r in logged)


def test_no_certificate_and_no_insecure_setting_refuses_to_start(stack: ServiceStack, tmp_path: Path) -> None:
    env = {**stack.env("catalog"), **PLAIN_TCP_ENV, "PLEXSYNC_GRPC_INSECURE": "false"}
    with pytest.raises(ServiceStartError, match="exited during start-up") as info:
        start_service("catalog", free_port(), env, tmp_path)
    assert "catalog refuses to start: no TLS certificate configured" in str(info.value)
    assert "PLEXSYNC_GRPC_INSECURE=true" in str(info.value)


def test_plain_tcp_says_so_at_start_up(stack: ServiceStack, tmp_path: Path) -> None:
    child = start_service("catalog", free_port(), {**stack.env("catalog"), **PLAIN_TCP_ENV}, tmp_path)
    try:
        records = [json.loads(line) for line in child.log_file.read_text().splitlines() if line.startswith("{")]
    finally:
        child.stop()
    [warning] = [r for r in records if "plain TCP" in r["message"]]
    assert warning["level"] == "WARNING"
    assert warning["message"] == "catalog serves plain TCP without TLS (PLEXSYNC_GRPC_INSECURE=true)"
