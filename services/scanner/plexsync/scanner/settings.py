"""Scanner settings, from the environment (see services/scanner/README.md)."""

from __future__ import annotations

from typing import Literal

from plexsync.common.plex_tls import PlexTlsSettings
from pydantic import Field


class ScannerSettings(PlexTlsSettings):
    """PlexTlsSettings (Plex HTTPS trust, as auth has it) plus the knobs of a scan."""

    scan_page_size: int = Field(default=500, ge=1, le=10_000, validation_alias="PLEXSYNC_SCAN_PAGE_SIZE")
    scan_concurrency: int = Field(default=8, ge=1, le=256, validation_alias="PLEXSYNC_SCAN_CONCURRENCY")
    scan_batch_size: int = Field(default=200, ge=1, le=5_000, validation_alias="PLEXSYNC_SCAN_BATCH_SIZE")
    scan_metadata_batch: int = Field(default=50, ge=1, le=100, validation_alias="PLEXSYNC_SCAN_METADATA_BATCH")
    scan_listing_worker: bool = Field(default=True, validation_alias="PLEXSYNC_SCAN_LISTING_WORKER")
    scan_progress_interval_seconds: float = Field(
        default=0.5, gt=0, le=1.0, validation_alias="PLEXSYNC_SCAN_PROGRESS_INTERVAL_SECONDS"
    )
    plex_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias="PLEXSYNC_PLEX_TIMEOUT_SECONDS")
    plex_max_retries: int = Field(default=5, ge=0, le=20, validation_alias="PLEXSYNC_PLEX_MAX_RETRIES")
    plex_backoff_seconds: float = Field(default=0.2, gt=0, validation_alias="PLEXSYNC_PLEX_BACKOFF_SECONDS")
    plex_format: Literal["json", "xml"] = Field(default="json", validation_alias="PLEXSYNC_PLEX_FORMAT")
    scan_stale_seconds: float = Field(default=60.0, gt=0, validation_alias="PLEXSYNC_SCAN_STALE_SECONDS")
    # Jobs from the scheduler's work queue (jobs.py).
    scan_max_jobs: int = Field(default=2, ge=1, le=64, validation_alias="PLEXSYNC_SCAN_MAX_JOBS")
    scan_job_ack_wait_seconds: float = Field(
        default=30.0, ge=1.0, le=3600.0, validation_alias="PLEXSYNC_SCAN_JOB_ACK_WAIT_SECONDS"
    )
    scan_job_max_deliver: int = Field(default=3, ge=1, le=100, validation_alias="PLEXSYNC_SCAN_JOB_MAX_DELIVER")
    # The real-time watcher (realtime/): one per Plex server across the replicas.
    realtime_enabled: bool = Field(default=True, validation_alias="PLEXSYNC_REALTIME_ENABLED")
    realtime_lease_seconds: float = Field(
        default=5.0, ge=1.0, le=300.0, validation_alias="PLEXSYNC_REALTIME_LEASE_SECONDS"
    )
    realtime_heartbeat_seconds: float = Field(
        default=10.0, ge=0.2, le=300.0, validation_alias="PLEXSYNC_REALTIME_HEARTBEAT_SECONDS"
    )
    realtime_debounce_seconds: float = Field(
        default=0.25, ge=0.0, le=30.0, validation_alias="PLEXSYNC_REALTIME_DEBOUNCE_SECONDS"
    )
    realtime_max_wait_seconds: float = Field(
        default=1.0, ge=0.0, le=60.0, validation_alias="PLEXSYNC_REALTIME_MAX_WAIT_SECONDS"
    )
    realtime_backoff_max_seconds: float = Field(
        default=30.0, ge=0.1, le=600.0, validation_alias="PLEXSYNC_REALTIME_BACKOFF_MAX_SECONDS"
    )
    realtime_servers_poll_seconds: float = Field(
        default=10.0, ge=0.5, le=600.0, validation_alias="PLEXSYNC_REALTIME_SERVERS_POLL_SECONDS"
    )
