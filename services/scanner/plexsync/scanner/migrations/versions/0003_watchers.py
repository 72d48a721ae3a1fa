"""real-time watchers: one lease per Plex server, with the holder's view of its stream

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 20:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watchers",
        sa.Column("server_id", sa.Text(), primary_key=True),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("connected_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lag_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("reconnects", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("changes_applied", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("fallback_scans", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("library_ids", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        schema="scanner",
    )


def downgrade() -> None:
    op.drop_table("watchers", schema="scanner")
