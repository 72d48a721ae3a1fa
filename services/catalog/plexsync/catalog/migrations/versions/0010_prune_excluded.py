"""prune excluded: whether a completed scan deletes the items its library's sync rules leave out

Off by default: EXCLUDED items keep their row (and id) until they match again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "libraries",
        sa.Column("prune_excluded", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        schema="catalog",
    )


def downgrade() -> None:
    op.drop_column("libraries", "prune_excluded", schema="catalog")
