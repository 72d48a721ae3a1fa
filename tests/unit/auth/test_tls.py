"""PLEXSYNC_PLEX_CA_BUNDLE: extra CAs for Plex HTTPS, checked at start-up (against fakeplex's generated certificate)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from plexsync.auth.plex_api import ClientHeaders, PlexHttp, PlexHttpError, PlexServerApi
from plexsync.auth.settings import AuthSettings
from plexsync.common.plex_tls import plex_ssl_context
from plexsync.fakeplex import FakePlex, LibrarySpec
from pydantic import ValidationError


@pytest.fixture(scope="module")
async def fp() -> AsyncIterator[FakePlex]:
    spec = LibrarySpec.from_sizes(movies=1, shows=0, other_videos=0, seed=5)
    async with FakePlex(spec=spec, remote=None, relay=None, tls_listen="127.0.0.1:0") as server:
        yield server


async def identity(fp: FakePlex, verify: object) -> str:
    http = PlexHttp(ClientHeaders("cid-tls"), timeout=3, verify=verify)  # type: ignore[arg-type]
    try:
        return (await PlexServerApi(http).identity(fp.listeners["https"].uri)).machine_identifier
    finally:
        await http.aclose()


async def test_untrusted_certificate_is_a_clear_error(fp: FakePlex) -> None:
    with pytest.raises(PlexHttpError) as info:
        await identity(fp, plex_ssl_context(True))
    assert info.value.kind == "connect" and "TLS certificate not trusted" in str(info.value)


async def test_ca_bundle_makes_the_server_trusted(fp: FakePlex) -> None:
    assert fp.tls is not None
    assert await identity(fp, plex_ssl_context(True, str(fp.tls.ca_file))) == fp.machine_identifier
    assert await identity(fp, plex_ssl_context(False)) == fp.machine_identifier, "PLEXSYNC_PLEX_VERIFY_TLS=false"


async def test_ca_bundle_setting_is_checked_at_start_up(fp: FakePlex, tmp_path: Path) -> None:
    assert fp.tls is not None
    ok = AuthSettings(PLEXSYNC_PLEX_CA_BUNDLE=str(fp.tls.ca_file))  # type: ignore[call-arg]
    assert ok.plex_ca_bundle == str(fp.tls.ca_file)
    assert AuthSettings().plex_ca_bundle == ""
    with pytest.raises(ValidationError, match="does not exist"):
        AuthSettings(PLEXSYNC_PLEX_CA_BUNDLE=str(tmp_path / "missing.pem"))  # type: ignore[call-arg]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValidationError, match="no usable PEM CA certificate"):
        AuthSettings(PLEXSYNC_PLEX_CA_BUNDLE=str(garbage))  # type: ignore[call-arg]
