"""scans

Revision ID: 0001
Revises:
Create Date: 2026-11-26 13:00:00
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


def upgrade() -> None:
    op.create_table(
        "scans",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("library_id", sa.Text(), nullable=False),
        sa.Column("server_id", sa.Text(), server_default="", nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("force", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("job_id", sa.Text(), server_default="", nullable=False),
        sa.Column("trace_id", sa.Text(), server_default="", nullable=False),
        sa.Column("counts", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("owner", sa.Text(), server_default="", nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scans")),
        schema="scanner",
    )
    op.create_index("ix_scans_library_id_create_time", "scans", ["library_id", "create_time"], schema="scanner")
    op.create_index("ix_scans_create_time_id", "scans", ["create_time", "id"], schema="scanner")
    op.create_index(
        "uq_scans_active_library",
        "scans",
        ["library_id"],
        unique=True,
        schema="scanner",
        postgresql_where=sa.text("status IN (1, 2)"),
    )


def downgrade() -> None:
    op.drop_index("uq_scans_active_library", table_name="scans", schema="scanner")
    op.drop_index("ix_scans_create_time_id", table_name="scans", schema="scanner")
    op.drop_index("ix_scans_library_id_create_time", table_name="scans", schema="scanner")
    op.drop_table("scans", schema="scanner")
