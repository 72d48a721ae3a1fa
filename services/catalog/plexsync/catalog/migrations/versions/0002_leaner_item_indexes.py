"""leaner item indexes: orphans-only parent key index, partial parent index, no guid lookup index

Every new item paid for nine item indexes and a guid index that no query uses; the parent-key index held one
entry per item although only orphans (a parent key whose parent has not arrived yet) are ever looked up, and
the query adopting orphans degenerated into a scan of the library per batch.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_items_library_id_parent_rating_key", table_name="items", schema="catalog")
    op.create_index(
        "ix_items_orphans",
        "items",
        ["library_id", "parent_rating_key"],
        schema="catalog",
        postgresql_where=sa.text("parent_id IS NULL AND parent_rating_key <> ''"),
    )
    op.drop_index("ix_items_parent_id_id", table_name="items", schema="catalog")
    op.create_index(
        "ix_items_parent_id_id",
        "items",
        ["parent_id", "id"],
        schema="catalog",
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.drop_index("ix_item_guids_provider_external_id", table_name="item_guids", schema="catalog")


def downgrade() -> None:
    op.create_index("ix_item_guids_provider_external_id", "item_guids", ["provider", "external_id"], schema="catalog")
    op.drop_index("ix_items_parent_id_id", table_name="items", schema="catalog")
    op.create_index("ix_items_parent_id_id", "items", ["parent_id", "id"], schema="catalog")
    op.drop_index("ix_items_orphans", table_name="items", schema="catalog")
    op.create_index(
        "ix_items_library_id_parent_rating_key", "items", ["library_id", "parent_rating_key"], schema="catalog"
    )
