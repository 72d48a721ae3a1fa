"""refresh interval default: a library's refresh_interval_seconds 0 means "the scheduler's default"

The scheduler has a service-wide default interval (PLEXSYNC_SCHEDULER_REFRESH_INTERVAL_SECONDS) that a library
overrides; until now every library stored 21600 (6 h) from its creation, so no row could say "use the
default". New rows store 0; existing rows at exactly the old default become 0 (the scheduler's default is also
6 h, so nothing changes for them unless an operator changes the default). The downgrade writes 21600 back
into rows that use the default.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("libraries", "refresh_interval_seconds", server_default="0", schema="catalog")
    op.execute("UPDATE catalog.libraries SET refresh_interval_seconds = 0 WHERE refresh_interval_seconds = 21600")


def downgrade() -> None:
    op.execute("UPDATE catalog.libraries SET refresh_interval_seconds = 21600 WHERE refresh_interval_seconds = 0")
    op.alter_column("libraries", "refresh_interval_seconds", server_default="21600", schema="catalog")
