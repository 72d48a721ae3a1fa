"""The scanner's own tables (schema ``scanner``): the history of scans and the real-time watch leases."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from plexsync.common.audit_schema import AuditColumns
from plexsync.common.db import schema_metadata
from plexsync.common.outbox import OutboxColumns
from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "scanner"
# Scan statuses that hold a library's scan slot (PENDING, RUNNING).
ACTIVE_STATUSES = (1, 2)


class Base(DeclarativeBase):
    metadata = schema_metadata(SCHEMA)


class ScanRow(Base):
    """One scan of one library; at most one PENDING or RUNNING per library (partial unique index)."""

    __tablename__ = "scans"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    library_id: Mapped[str] = mapped_column(Text, nullable=False)
    server_id: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    mode: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    force: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    job_id: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    trace_id: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    # `stats.ScanStats.to_json`: Plex requests and bytes, time per kind of work.
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    # The replica that ran the scan ("host:pid:boot", as in ScanStarted) and which delivery of its job it is
    # (0 for a direct ScanLibrary call, which has no job).
    replica: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # CANCELLED because its scanner stopped and handed the job back to the queue (so the job is not done).
    requeued: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    error: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # Which process runs the scan ("host:pid:boot-id") and when it last said so.
    owner: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_scans_library_id_create_time", "library_id", "create_time"),
        Index("ix_scans_create_time_id", "create_time", "id"),
        Index("ix_scans_job_id", "job_id", postgresql_where=text("job_id <> ''")),
        Index(
            "uq_scans_active_library",
            "library_id",
            unique=True,
            postgresql_where=text("status IN (1, 2)"),
        ),
    )


class WatcherRow(Base):
    """The lease on one Plex server's real-time watch, with its holder's view of the stream (realtime/leases.py)."""

    __tablename__ = "watchers"

    server_id: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str] = mapped_column(Text, nullable=False)
    lease_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    state: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    connected_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lag_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    reconnects: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    changes_applied: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    fallback_scans: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    library_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


class OutboxRow(OutboxColumns, Base):
    """Events waiting to be published to NATS (plexsync.common.outbox), in id order."""


class AuditRow(AuditColumns, Base):
    """Who changed or was refused what (plexsync.common.audit); written and read as SQL by AuditLog."""
