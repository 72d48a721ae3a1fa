"""sync rules: a library's content-based rule (its canonical expression)

Items left out by the rule keep their row with state 5 (ITEM_STATE_EXCLUDED), so they come back with the same id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("libraries", sa.Column("sync_rule", sa.Text(), nullable=False, server_default=""), schema="catalog")


def downgrade() -> None:
    op.execute("UPDATE catalog.items SET state = 1 WHERE state = 5")
    op.drop_column("libraries", "sync_rule", schema="catalog")
