"""Trust for HTTPS to Plex servers and plex.tv, the same in every service that talks to Plex.

Auth probes a server's connections and picks the one the scanner then uses; if the two trusted different CAs, auth
could pick an ``https`` connection (a server behind a reverse proxy with a private CA) that every scan then fails to
verify. So both read `PlexTlsSettings` (``PLEXSYNC_PLEX_VERIFY_TLS``, ``PLEXSYNC_PLEX_CA_BUNDLE``) and build their
clients' trust with `plex_ssl_context`.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

import httpx
from plexsync.common.config import CommonSettings
from pydantic import Field, field_validator


@functools.cache
def plex_ssl_context(verify: bool = True, ca_bundle: str = "") -> ssl.SSLContext | bool:
    """What httpx's ``verify`` (and aiohttp's ``ssl``) gets: False, or a context trusting httpx's usual CAs
    (certifi, or SSL_CERT_FILE / SSL_CERT_DIR) plus ``ca_bundle`` (a PEM file or an OpenSSL hashed directory).

    Built once per process and setting (loading the CA store takes ~50-100 ms) and shared by every client."""
    if not verify:
        return False
    ctx = httpx.create_ssl_context()
    if ca_bundle:
        if Path(ca_bundle).is_dir():
            ctx.load_verify_locations(capath=ca_bundle)
        else:
            ctx.load_verify_locations(cafile=ca_bundle)
    return ctx


class PlexTlsSettings(CommonSettings):
    """CommonSettings plus how Plex HTTPS is verified; the base of every service's settings that call Plex."""

    plex_verify_tls: bool = Field(default=True, validation_alias="PLEXSYNC_PLEX_VERIFY_TLS")
    # PEM file (or c_rehash'ed directory) of CA certificates trusted for Plex HTTPS, on top of the usual ones.
    plex_ca_bundle: str = Field(default="", validation_alias="PLEXSYNC_PLEX_CA_BUNDLE")

    @field_validator("plex_ca_bundle")
    @classmethod
    def _ca_bundle_loads(cls, value: str) -> str:
        """A missing or unreadable bundle stops the service at start-up, not at its first scan."""
        value = value.strip()
        if not value:
            return ""
        path = Path(value)
        if not path.exists():
            raise ValueError(f"{value} does not exist (expected a PEM file of CA certificates)")
        try:
            ctx = ssl.create_default_context()
            if path.is_dir():
                ctx.load_verify_locations(capath=str(path))
            else:
                ctx.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{value} holds no usable PEM CA certificate ({exc.__class__.__name__})") from None
        return value

    def plex_tls(self) -> ssl.SSLContext | bool:
        """The shared trust these settings describe (`plex_ssl_context`)."""
        return plex_ssl_context(self.plex_verify_tls, self.plex_ca_bundle)
