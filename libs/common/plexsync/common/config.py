"""Settings from the environment, shared by every service.

Every variable is documented in the README's configuration reference; services read only these classes,
never `os.environ` directly, so a missing required value fails at start-up with one clear message.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from plexsync.common.access import ServiceToken, parse_service_tokens
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every service shares."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="",
        validation_alias="DATABASE_URL",
        description="PostgreSQL URL (postgresql://user:pass@host:port/db). Required by auth, catalog, scanner.",
    )
    nats_url: str = Field(
        default="",
        validation_alias="NATS_URL",
        description="NATS URL (nats://host:4222), JetStream enabled. Required by scanner and auth.",
    )
    log_level: str = Field(default="INFO", validation_alias="PLEXSYNC_LOG_LEVEL")
    log_format: str = Field(default="json", validation_alias="PLEXSYNC_LOG_FORMAT", description="json or text")
    grpc_host: str = Field(default="0.0.0.0", validation_alias="PLEXSYNC_GRPC_HOST")
    grpc_port: int = Field(default=0, validation_alias="PLEXSYNC_GRPC_PORT")
    # A plain-TCP port serving only grpc.health.v1 (for the kubelet's gRPC probes when the service port is TLS); 0: off.
    health_port: int = Field(default=0, ge=0, le=65535, validation_alias="PLEXSYNC_HEALTH_PORT")
    shutdown_grace_seconds: float = Field(default=10.0, validation_alias="PLEXSYNC_SHUTDOWN_GRACE_SECONDS")
    # true: upgrade the service's schema at start (dev stack, tests); false (Kubernetes: a migrations Job does it):
    # only check it is at this code's head revision and refuse to start, saying so, when it is behind.
    migrate_on_start: bool = Field(default=True, validation_alias="PLEXSYNC_MIGRATE_ON_START")
    # How often readiness re-checks the service's dependencies (PostgreSQL, NATS); two failures in a row make the
    # service NOT_SERVING until one succeeds (see plexsync.common.readiness).
    readiness_check_seconds: float = Field(
        default=5.0, ge=0.2, le=300.0, validation_alias="PLEXSYNC_READINESS_CHECK_SECONDS"
    )
    # "identity:token,identity@role:token": callers this service accepts, who they are and their role.
    service_tokens: SecretStr = Field(default=SecretStr(""), validation_alias="PLEXSYNC_SERVICE_TOKENS")
    # The bearer token this process presents when it calls other services.
    service_token: SecretStr = Field(default=SecretStr(""), validation_alias="PLEXSYNC_SERVICE_TOKEN")
    # Signs page tokens (AIP-158); when empty, derived from PLEXSYNC_SERVICE_TOKENS (see plexsync.common.pagination).
    page_token_key: SecretStr = Field(default=SecretStr(""), validation_alias="PLEXSYNC_PAGE_TOKEN_KEY")
    auth_addr: str = Field(default="127.0.0.1:50051", validation_alias="PLEXSYNC_AUTH_ADDR")
    catalog_addr: str = Field(default="127.0.0.1:50052", validation_alias="PLEXSYNC_CATALOG_ADDR")
    scanner_addr: str = Field(default="127.0.0.1:50053", validation_alias="PLEXSYNC_SCANNER_ADDR")
    scheduler_addr: str = Field(default="127.0.0.1:50054", validation_alias="PLEXSYNC_SCHEDULER_ADDR")
    events_stream: str = Field(default="PLEXSYNC_EVENTS", validation_alias="PLEXSYNC_EVENTS_STREAM")
    jobs_stream: str = Field(default="PLEXSYNC_JOBS", validation_alias="PLEXSYNC_JOBS_STREAM")
    events_max_age_hours: float = Field(default=168.0, validation_alias="PLEXSYNC_EVENTS_MAX_AGE_HOURS")
    # Per-caller rate limit (plexsync.common.limits) for the roles in PLEXSYNC_RATE_LIMIT_ROLES: calls a second on
    # average and the burst allowed; 0 turns it off.
    rate_limit_per_second: float = Field(default=200.0, ge=0, validation_alias="PLEXSYNC_RATE_LIMIT_PER_SECOND")
    rate_limit_burst: float = Field(default=400.0, ge=1, validation_alias="PLEXSYNC_RATE_LIMIT_BURST")
    rate_limit_roles: str = Field(default="reader,admin", validation_alias="PLEXSYNC_RATE_LIMIT_ROLES")
    # HTTP/2 streams one client connection may have open at once (more wait for a free one).
    grpc_max_concurrent_streams: int = Field(
        default=1000, ge=1, validation_alias="PLEXSYNC_GRPC_MAX_CONCURRENT_STREAMS"
    )
    # TLS (see plexsync.common.tls and docs/security.md): this process's certificate and key (served, and presented
    # as the client certificate for mTLS), the CA that verifies peers, whether callers must present a certificate.
    # Without a certificate a service starts only when PLEXSYNC_GRPC_INSECURE=true says plain TCP on purpose.
    tls_cert_file: str = Field(default="", validation_alias="PLEXSYNC_TLS_CERT_FILE")
    tls_key_file: str = Field(default="", validation_alias="PLEXSYNC_TLS_KEY_FILE")
    tls_ca_file: str = Field(default="", validation_alias="PLEXSYNC_TLS_CA_FILE")
    tls_client_auth: Literal["none", "require"] = Field(default="none", validation_alias="PLEXSYNC_TLS_CLIENT_AUTH")
    grpc_insecure: bool = Field(default=False, validation_alias="PLEXSYNC_GRPC_INSECURE")

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"PLEXSYNC_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}")
        return level

    def accepted_tokens(self) -> list[ServiceToken]:
        """The callers this service accepts, parsed from PLEXSYNC_SERVICE_TOKENS (see plexsync.common.access)."""
        return parse_service_tokens(self.service_tokens.get_secret_value())

    def require(self, *names: str) -> None:
        """Fail fast, naming every missing required variable at once."""
        missing = [name for name in names if not getattr(self, _FIELD_BY_ENV[name])]
        if missing:
            raise MissingSettingError(missing)


_FIELD_BY_ENV = {"DATABASE_URL": "database_url", "NATS_URL": "nats_url"}


class MissingSettingError(RuntimeError):
    """A required environment variable is not set."""

    def __init__(self, names: list[str]) -> None:
        super().__init__("missing required environment variable(s): " + ", ".join(names))
        self.names = names


@lru_cache(maxsize=1)
def common_settings() -> CommonSettings:
    """The process-wide common settings (read once)."""
    return CommonSettings()
