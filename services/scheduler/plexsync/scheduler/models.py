"""The scheduler's own tables (schema ``scheduler``): job history, per-library schedules, the leader."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from plexsync.common.audit_schema import AuditColumns
from plexsync.common.db import schema_metadata
from plexsync.common.outbox import OutboxColumns
from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "scheduler"
# JobStatus values (common.proto).
PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = 1, 2, 3, 4, 5, 6
ACTIVE = (QUEUED, RUNNING)
OPEN = (PENDING, QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


class Base(DeclarativeBase):
    metadata = schema_metadata(SCHEMA)


class JobRow(Base):
    """One job: at most one QUEUED-or-RUNNING and one PENDING per library (partial unique indexes)."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    library_id: Mapped[str] = mapped_column(Text, nullable=False)
    server_id: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    library_name: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    library_kind: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    mode: Mapped[int] = mapped_column(Integer, nullable=False)
    force: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    trigger: Mapped[int] = mapped_column(Integer, nullable=False)
    triggered_by: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    reason: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    scan_id: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    replica: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    error: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # W3C traceparent of the span that created the job: dispatch and the scanner continue that trace.
    traceparent: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # The job's message in the work-queue stream, once published (to delete it when cancelled).
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    due_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    dispatch_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        Index("ix_jobs_create_time_id", "create_time", "id"),
        Index("ix_jobs_library_id_create_time", "library_id", "create_time"),
        Index("ix_jobs_scan_id", "scan_id"),
        Index("ix_jobs_status", "status", postgresql_where=text("status IN (1, 2, 3)")),
        Index("uq_jobs_active_library", "library_id", unique=True, postgresql_where=text("status IN (2, 3)")),
        Index("uq_jobs_pending_library", "library_id", unique=True, postgresql_where=text("status = 1")),
    )


class ScheduleRow(Base):
    """A library's schedule overrides (NULL: the service default) and the history the policy reads."""

    __tablename__ = "schedules"

    library_id: Mapped[str] = mapped_column(Text, primary_key=True)
    deep_every: Mapped[int | None] = mapped_column(Integer)
    deep_interval_seconds: Mapped[int | None] = mapped_column(BigInteger)
    window_start: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    window_end: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    window_time_zone: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    last_run: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_deep: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    incrementals_since_deep: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_failure: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


class LeaderRow(Base):
    """Who holds the scheduling lease (the advisory lock), for GetSchedulerStatus; one row."""

    __tablename__ = "leader"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    replica: Mapped[str] = mapped_column(Text, nullable=False)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_tick: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxRow(OutboxColumns, Base):
    """Events waiting to be published to NATS (plexsync.common.outbox), in id order."""


class AuditRow(AuditColumns, Base):
    """Who changed or was refused what (plexsync.common.audit); written and read as SQL by AuditLog."""
