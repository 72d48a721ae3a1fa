"""scheduler: jobs, schedules, leader

Revision ID: 0001
Revises:
Create Date: 2026-12-06 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "scheduler"


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("library_id", sa.Text(), nullable=False),
        sa.Column("server_id", sa.Text(), server_default="", nullable=False),
        sa.Column("library_name", sa.Text(), server_default="", nullable=False),
        sa.Column("library_kind", sa.Integer(), server_default="0", nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("force", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.Integer(), nullable=False),
        sa.Column("triggered_by", sa.Text(), server_default="", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("scan_id", sa.Text(), server_default="", nullable=False),
        sa.Column("replica", sa.Text(), server_default="", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("counts", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("stats", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("traceparent", sa.Text(), server_default="", nullable=False),
        sa.Column("stream_seq", sa.BigInteger(), nullable=True),
        sa.Column("create_time", ts, nullable=False),
        sa.Column("due_time", ts, nullable=False),
        sa.Column("dispatch_time", ts, nullable=True),
        sa.Column("start_time", ts, nullable=True),
        sa.Column("end_time", ts, nullable=True),
        sa.Column("update_time", ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        schema=S,
    )
    op.create_index("ix_jobs_create_time_id", "jobs", ["create_time", "id"], schema=S)
    op.create_index("ix_jobs_library_id_create_time", "jobs", ["library_id", "create_time"], schema=S)
    op.create_index("ix_jobs_scan_id", "jobs", ["scan_id"], schema=S)
    op.create_index("ix_jobs_status", "jobs", ["status"], schema=S, postgresql_where=sa.text("status IN (1, 2, 3)"))
    op.create_index(
        "uq_jobs_active_library", "jobs", ["library_id"], unique=True, schema=S,
        postgresql_where=sa.text("status IN (2, 3)"),
    )  # fmt: skip
    op.create_index(
        "uq_jobs_pending_library", "jobs", ["library_id"], unique=True, schema=S,
        postgresql_where=sa.text("status = 1"),
    )  # fmt: skip
    op.create_table(
        "schedules",
        sa.Column("library_id", sa.Text(), nullable=False),
        sa.Column("deep_every", sa.Integer(), nullable=True),
        sa.Column("deep_interval_seconds", sa.BigInteger(), nullable=True),
        sa.Column("window_start", sa.Text(), server_default="", nullable=False),
        sa.Column("window_end", sa.Text(), server_default="", nullable=False),
        sa.Column("window_time_zone", sa.Text(), server_default="", nullable=False),
        sa.Column("last_run", ts, nullable=True),
        sa.Column("last_success", ts, nullable=True),
        sa.Column("last_deep", ts, nullable=True),
        sa.Column("incrementals_since_deep", sa.Integer(), server_default="0", nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_failure", ts, nullable=True),
        sa.Column("update_time", ts, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("library_id", name=op.f("pk_schedules")),
        schema=S,
    )
    op.create_table(
        "leader",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("replica", sa.Text(), nullable=False),
        sa.Column("since", ts, nullable=False),
        sa.Column("last_tick", ts, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leader")),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("leader", schema=S)
    op.drop_table("schedules", schema=S)
    op.drop_table("jobs", schema=S)
