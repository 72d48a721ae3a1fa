"""Scheduler settings, from the environment (see services/scheduler/README.md)."""

from __future__ import annotations

from plexsync.common.config import CommonSettings
from pydantic import Field

DAY = 86400


class SchedulerSettings(CommonSettings):
    """CommonSettings plus when to scan, how much at once, and how replicas share the lead."""

    tick_seconds: float = Field(default=15.0, gt=0, le=3600, validation_alias="PLEXSYNC_SCHEDULER_TICK_SECONDS")
    refresh_interval_seconds: int = Field(
        default=6 * 3600, ge=10, le=366 * DAY, validation_alias="PLEXSYNC_SCHEDULER_REFRESH_INTERVAL_SECONDS"
    )
    deep_every: int = Field(default=0, ge=0, le=10_000, validation_alias="PLEXSYNC_SCHEDULER_DEEP_EVERY")
    deep_interval_seconds: int = Field(
        default=7 * DAY, ge=0, le=366 * DAY, validation_alias="PLEXSYNC_SCHEDULER_DEEP_INTERVAL_SECONDS"
    )
    server_sync_seconds: float = Field(default=3600.0, gt=0, validation_alias="PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS")
    max_running: int = Field(default=4, ge=1, le=1000, validation_alias="PLEXSYNC_SCHEDULER_MAX_RUNNING")
    max_running_per_server: int = Field(
        default=2, ge=1, le=1000, validation_alias="PLEXSYNC_SCHEDULER_MAX_RUNNING_PER_SERVER"
    )
    retry_seconds: float = Field(default=60.0, gt=0, validation_alias="PLEXSYNC_SCHEDULER_RETRY_SECONDS")
    leader_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, validation_alias="PLEXSYNC_SCHEDULER_LEADER_POLL_SECONDS"
    )
    reconcile_seconds: float = Field(default=5.0, gt=0, validation_alias="PLEXSYNC_SCHEDULER_RECONCILE_SECONDS")
    # A running job whose scanner said nothing for this long is checked with the scanner (GetScan).
    silent_job_seconds: float = Field(default=30.0, gt=0, validation_alias="PLEXSYNC_SCHEDULER_SILENT_JOB_SECONDS")
    retention_days: float = Field(default=30.0, gt=0, validation_alias="PLEXSYNC_SCHEDULER_RETENTION_DAYS")
