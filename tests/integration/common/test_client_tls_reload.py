"""Client certificates follow their files: a peer channel (plexsync.common.clients.peer_channel) whose client
certificate and CA are rewritten starts presenting the new ones without being recreated, against a real catalog
that requires client certificates from its own CA; a half-written key keeps the working channel; close() closes
every underlying channel and leaves no task behind; plain TCP keeps the plain channel."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from plexsync.common.clients import ReloadingChannel, peer_channel
from plexsync.common.config import CommonSettings
from plexsync.common.tls import CertPair, DevCertificateAuthority
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc
from pydantic import SecretStr

from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(120)
CHECK = 0.1  # the channels' check interval here: a rotation is seen within a tenth of a second


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory) -> ServiceStack:
    """A catalog that requires client certificates from CA "B" (the stack's CA) only."""
    service_stack.use_tls(Path(tmp_path_factory.mktemp("ca-b")), client_auth=True)
    service_stack.start("catalog")
    return service_stack


@pytest.fixture(scope="module")
def ca_a(tmp_path_factory: pytest.TempPathFactory) -> DevCertificateAuthority:
    return DevCertificateAuthority(Path(tmp_path_factory.mktemp("ca-a")), common_name="CA A")


def install(ca: DevCertificateAuthority, directory: Path) -> CertPair:
    """Write a client certificate from `ca` and a CA file trusting `ca` into `directory` (the mounted Secret)."""
    pair = ca.issue("scanner", directory=directory)
    replace(directory / "ca.pem", ca.ca_file.read_bytes())
    return pair


def replace(path: Path, data: bytes) -> None:
    """Write `path` in one step (a rename), as a Secret update does: no check sees it half-truncated."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def settings_for(stack: ServiceStack, directory: Path, pair: CertPair) -> CommonSettings:
    return CommonSettings(
        service_token=SecretStr(stack.tokens["scanner"]),
        tls_ca_file=str(directory / "ca.pem"),
        tls_cert_file=str(pair.cert_file),
        tls_key_file=str(pair.key_file),
    )


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(CHECK)


async def list_libraries(stub: catalog_pb2_grpc.CatalogServiceStub) -> bool:
    """True when a call goes through, False when the TLS handshake is refused (UNAVAILABLE)."""
    try:
        await stub.ListLibraries(catalog_pb2.ListLibrariesRequest(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return False
    return True


def is_closed(channel: grpc.aio.Channel) -> bool:
    return bool(channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN)


async def closed(channel: grpc.aio.Channel) -> bool:
    return is_closed(channel)


def retire_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("retire-channel") and not t.done()]


async def test_a_renewed_client_certificate_is_presented_by_the_same_channel(
    stack: ServiceStack, ca_a: DevCertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plexsync.common.clients")
    pair = install(ca_a, tmp_path)
    settings = settings_for(stack, tmp_path, pair)
    channel = peer_channel(settings, stack.addresses["catalog"], check_interval=CHECK, grace=0.5)
    assert isinstance(channel, ReloadingChannel)
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    try:
        assert not await list_libraries(stub), "a certificate from CA A is refused"
        first = channel.current()

        assert stack.ca is not None
        install(stack.ca, tmp_path)  # cert-manager renews the Secret: certificate, key and CA from B
        await until(lambda: list_libraries(stub), "the same stub's calls go through")
        assert channel.reloads >= 1
        assert channel.current() is not first
        await until(lambda: closed(first), "the replaced channel is closed after its grace period")

        async def retired() -> bool:  # a rotation seen half-done (new pair, old CA) may have reloaded twice
            return not retire_tasks()

        await until(retired, "every replaced channel is closed in the background")
    finally:
        await channel.close()

    reloaded = [r for r in caplog.records if r.getMessage() == "TLS client certificate reloaded"]
    assert len(reloaded) == channel.reloads
    assert all(r.levelno == logging.INFO for r in reloaded)
    assert "PRIVATE KEY" not in caplog.text


async def test_an_unusable_key_keeps_the_working_channel_and_close_closes_everything(
    stack: ServiceStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert stack.ca is not None
    caplog.set_level(logging.INFO, logger="plexsync.common.clients")
    pair = install(stack.ca, tmp_path)
    channel = peer_channel(settings_for(stack, tmp_path, pair), stack.addresses["catalog"], check_interval=CHECK)
    assert isinstance(channel, ReloadingChannel)
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    try:
        assert await list_libraries(stub)
        working = channel.current()

        good_key = pair.key_file.read_bytes()
        replace(pair.key_file, b"-----BEGIN PRIVATE KEY-----\nhalf-writ")  # pragma: allowlist secret

        async def warned_and_still_working() -> bool:
            assert await list_libraries(stub), "the previous certificate keeps working"
            return any("cannot be used yet" in r.getMessage() for r in caplog.records)

        await until(warned_and_still_working, "the unusable key is noticed")
        assert channel.current() is working and channel.reloads == 0
        [warning] = [r for r in caplog.records if "cannot be used yet" in r.getMessage()]  # once, not every check
        assert warning.levelno == logging.WARNING
        assert "half-writ" not in caplog.text

        pair.key_file.write_bytes(good_key)  # the rotation completes

        async def reloaded() -> bool:
            return await list_libraries(stub) and channel.reloads == 1

        await until(reloaded, "the completed files are used")
        assert channel.current() is not working
        assert retire_tasks(), "the replaced channel waits out its 60 s grace period"
    finally:
        await channel.close()
    assert not retire_tasks(), "close() leaves no task behind"
    assert is_closed(working) and is_closed(channel.current())
    assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN


async def test_plain_tcp_keeps_the_plain_channel() -> None:
    settings = CommonSettings(service_token=SecretStr("tok-123456"), tls_ca_file="", grpc_insecure=True)
    async with peer_channel(settings, "127.0.0.1:1") as channel:
        assert isinstance(channel, grpc.aio.Channel) and not isinstance(channel, ReloadingChannel)
