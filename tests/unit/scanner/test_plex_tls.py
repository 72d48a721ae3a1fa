"""The scanner's Plex client keeps verifying certificates: an untrusted one is one clear, unretried error."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from plexsync.common.plex_tls import plex_ssl_context
from plexsync.fakeplex import FakePlex, LibrarySpec
from plexsync.scanner.plex_client import (
    PlexCertificateError,
    PlexClient,
    PlexCredentials,
    certificate_failure,
)
from plexsync.scanner.realtime.watcher import NOTIFICATIONS_PATH, _describe
from plexsync.scanner.settings import ScannerSettings


@pytest.fixture(scope="module")
async def fp() -> AsyncIterator[FakePlex]:
    spec = LibrarySpec.from_sizes(movies=1, shows=0, other_videos=0, seed=7)
    async with FakePlex(spec=spec, remote=None, relay=None, tls_listen="127.0.0.1:0") as server:
        yield server


async def test_untrusted_certificate_names_the_host_and_is_not_retried(fp: FakePlex) -> None:
    https = fp.listeners["https"].uri
    async with PlexClient(PlexCredentials(https, fp.token), max_retries=3, backoff=0.01) as plex:
        with pytest.raises(PlexCertificateError) as info:
            await plex.server_info()
        assert plex.requests == 1, "a certificate failure is not retried"
    message = str(info.value)
    assert message.startswith(f"Plex at {https}: the TLS certificate could not be verified (")
    assert message.endswith("(self-signed certificate in certificate chain)"), "OpenSSL's reason, not a traceback"
    assert fp.token not in message


async def test_trusted_certificate_works(fp: FakePlex) -> None:
    """PLEXSYNC_PLEX_CA_BUNDLE, as the scanner's settings hand it to every Plex client."""
    assert fp.tls is not None
    settings = ScannerSettings(PLEXSYNC_PLEX_CA_BUNDLE=str(fp.tls.ca_file))  # type: ignore[call-arg]
    async with PlexClient(PlexCredentials(fp.listeners["https"].uri, fp.token), verify=settings.plex_tls()) as plex:
        assert (await plex.server_info()).machine_identifier == fp.machine_identifier
    unverified = ScannerSettings(PLEXSYNC_PLEX_VERIFY_TLS="false").plex_tls()  # type: ignore[call-arg]
    async with PlexClient(PlexCredentials(fp.listeners["https"].uri, fp.token), verify=unverified) as plex:
        assert (await plex.server_info()).machine_identifier == fp.machine_identifier


def test_certificate_failure_reads_the_exception_chain() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    verify.verify_message = "certificate has expired"
    try:
        try:
            raise verify
        except ssl.SSLError as inner:
            raise httpx.ConnectError("handshake") from inner
    except httpx.ConnectError as outer:
        assert certificate_failure(outer) == "certificate has expired"
    assert certificate_failure(httpx.ConnectError("[Errno 111] Connection refused")) is None


async def test_the_notification_stream_says_the_same(fp: FakePlex) -> None:
    https = fp.listeners["https"].uri
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await session.ws_connect(https + NOTIFICATIONS_PATH, ssl=plex_ssl_context())
    host_port = https.removeprefix("https://")
    assert _describe(info.value) == (
        f"Plex at {host_port}: the TLS certificate could not be verified (self-signed certificate in certificate chain)"
    )
