"""Auth's Plex connections: a certificate that fails verification names the host and OpenSSL's reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from plexsync.auth.plex_api import ClientHeaders, PlexHttp, PlexHttpError, PlexServerApi
from plexsync.common.plex_tls import plex_ssl_context
from plexsync.fakeplex import FakePlex, LibrarySpec


@pytest.fixture(scope="module")
async def fp() -> AsyncIterator[FakePlex]:
    spec = LibrarySpec.from_sizes(movies=1, shows=0, other_videos=0, seed=6)
    async with FakePlex(spec=spec, remote=None, relay=None, tls_listen="127.0.0.1:0") as server:
        yield server


async def test_the_message_names_the_host_and_why_the_certificate_failed(fp: FakePlex) -> None:
    http = PlexHttp(ClientHeaders("cid-tls-reason"), timeout=3, verify=plex_ssl_context(True))
    uri = fp.listeners["https"].uri
    try:
        with pytest.raises(PlexHttpError) as info:
            await PlexServerApi(http).identity(uri)
    finally:
        await http.aclose()
    assert info.value.kind == "connect"
    reason = "self-signed certificate in certificate chain"
    assert str(info.value) == f"could not connect to {uri}/identity: TLS certificate not trusted ({reason})"
