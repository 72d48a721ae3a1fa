"""scan stats, replica, attempt and requeued; scans found by job id

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "scans",
        sa.Column("stats", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        schema="scanner",
    )
    op.add_column("scans", sa.Column("replica", sa.Text(), server_default="", nullable=False), schema="scanner")
    op.add_column("scans", sa.Column("attempt", sa.Integer(), server_default="0", nullable=False), schema="scanner")
    op.add_column(
        "scans", sa.Column("requeued", sa.Boolean(), server_default=sa.text("false"), nullable=False), schema="scanner"
    )
    op.create_index("ix_scans_job_id", "scans", ["job_id"], schema="scanner", postgresql_where=sa.text("job_id <> ''"))


def downgrade() -> None:
    op.drop_index("ix_scans_job_id", table_name="scans", schema="scanner")
    op.drop_column("scans", "requeued", schema="scanner")
    op.drop_column("scans", "attempt", schema="scanner")
    op.drop_column("scans", "replica", schema="scanner")
    op.drop_column("scans", "stats", schema="scanner")
