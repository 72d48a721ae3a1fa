"""missing items index: items FileNotFound, by library and rating key

Every batch that sees unchanged items asks which of them another scan marked missing meanwhile (pipelined
batches, and `seen_rating_keys`): 1,000 rating keys of items that are almost never missing. Through the
unique (library_id, rating_key) index that is 1,000 probes, and on a table whose statistics lag behind a
first ingest the planner chose a sequential scan instead (11 ms per batch at 50,000 items, growing with the
library; seen with pg_stat_statements). This index holds only missing items, so it is empty most of the time,
costs nothing when items are inserted or updated while present, and answers the question in a few pages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 20:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_items_missing",
        "items",
        ["library_id", "rating_key"],
        schema="catalog",
        postgresql_where=sa.text("missing_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_items_missing", table_name="items", schema="catalog")
