"""Auth service settings, read from the environment (see services/auth/README.md)."""

from __future__ import annotations

from plexsync.common.plex_tls import PlexTlsSettings
from pydantic import Field, SecretStr, field_validator


class AuthSettings(PlexTlsSettings):
    """Everything the auth service reads from the environment."""

    plex_tv_url: str = Field(default="https://plex.tv", validation_alias="PLEXSYNC_PLEX_TV_URL")
    plex_app_url: str = Field(default="https://app.plex.tv", validation_alias="PLEXSYNC_PLEX_APP_URL")
    # "kid1:base64key,kid2:base64key"; the first key encrypts, every key decrypts.
    token_keys: SecretStr = Field(default=SecretStr(""), validation_alias="PLEXSYNC_TOKEN_KEYS")
    probe_timeout_seconds: float = Field(default=3.0, gt=0, validation_alias="PLEXSYNC_PROBE_TIMEOUT_SECONDS")
    plex_timeout_seconds: float = Field(default=10.0, gt=0, validation_alias="PLEXSYNC_PLEX_TIMEOUT_SECONDS")
    pin_poll_interval_seconds: float = Field(default=1.0, gt=0, validation_alias="PLEXSYNC_PIN_POLL_INTERVAL_SECONDS")
    gdm_enabled: bool = Field(default=True, validation_alias="PLEXSYNC_GDM_ENABLED")
    gdm_port: int = Field(default=32414, gt=0, lt=65536, validation_alias="PLEXSYNC_GDM_PORT")
    gdm_addresses: str = Field(default="239.0.0.250,255.255.255.255", validation_alias="PLEXSYNC_GDM_ADDRESSES")
    gdm_timeout_seconds: float = Field(default=2.0, gt=0, validation_alias="PLEXSYNC_GDM_TIMEOUT_SECONDS")
    device_name: str = Field(default="plexsync", validation_alias="PLEXSYNC_DEVICE_NAME")

    @field_validator("plex_tv_url", "plex_app_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, not {value!r}")
        return value

    def gdm_targets(self) -> list[str]:
        return [a.strip() for a in self.gdm_addresses.split(",") if a.strip()]
