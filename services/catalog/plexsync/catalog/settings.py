"""Catalog settings, all from the environment."""

from __future__ import annotations

from plexsync.common.config import CommonSettings
from pydantic import Field


class CatalogSettings(CommonSettings):
    """Settings of the catalog process."""

    migrate: bool = Field(
        default=True,
        validation_alias="PLEXSYNC_CATALOG_MIGRATE",
        description="Run `alembic upgrade head` at start (under an advisory lock); 0 to leave it to a job.",
    )
    db_pool_size: int = Field(default=8, validation_alias="PLEXSYNC_CATALOG_DB_POOL_SIZE", ge=1, le=100)
    etag_chunk_size: int = Field(default=5000, validation_alias="PLEXSYNC_CATALOG_ETAG_CHUNK", ge=100, le=50_000)
    max_batch_items: int = Field(default=10_000, validation_alias="PLEXSYNC_CATALOG_MAX_BATCH_ITEMS", ge=1)
    write_pipeline: int = Field(
        default=2,
        validation_alias="PLEXSYNC_CATALOG_WRITE_PIPELINE",
        ge=1,
        le=8,
        description="Transactions of one WriteItems stream open at once (1: one batch after the other).",
    )
    pipeline_min_items: int = Field(
        default=500,
        validation_alias="PLEXSYNC_CATALOG_PIPELINE_MIN_ITEMS",
        ge=1,
        description="Smallest WriteItems batch that may start while the one before is still being written.",
    )
    row_lock_timeout_ms: int = Field(
        default=5000,
        validation_alias="PLEXSYNC_CATALOG_ROW_LOCK_TIMEOUT_MS",
        ge=50,
        le=600_000,
        description="Longest wait of a WriteItems statement for a row another writer holds; the batch is then "
        "written again (ABORTED after three tries).",
    )
    ingest_workers: int = Field(
        default=1,
        validation_alias="PLEXSYNC_CATALOG_INGEST_WORKERS",
        ge=0,
        le=32,
        description="Worker processes that flatten the next WriteItems batches while the current ones are written "
        "(0: all in-process). Give a catalog with cores of its own two: bulk ingest gets faster.",
    )
    changes_retention_hours: float = Field(
        default=168.0,
        validation_alias="PLEXSYNC_CATALOG_CHANGES_RETENTION_HOURS",
        gt=0,
        description="How long the change log keeps changes; a WatchChanges resume token older than that has "
        "expired (FAILED_PRECONDITION).",
    )
    changes_prune_seconds: float = Field(
        default=300.0,
        validation_alias="PLEXSYNC_CATALOG_CHANGES_PRUNE_SECONDS",
        gt=0,
        description="Time between two prunes of the change log (one replica prunes at a time).",
    )
    changes_poll_seconds: float = Field(
        default=2.0,
        validation_alias="PLEXSYNC_CATALOG_CHANGES_POLL_SECONDS",
        gt=0,
        le=60,
        description="WatchChanges re-reads the log this often even without a notification (a lost one only delays).",
    )
    changes_page_size: int = Field(
        default=250,
        validation_alias="PLEXSYNC_CATALOG_CHANGES_PAGE",
        ge=1,
        le=5000,
        description="Changes per WatchChanges message (one read of the log each).",
    )
