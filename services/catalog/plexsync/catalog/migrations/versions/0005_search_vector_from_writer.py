"""search vector from the writer: items.search_vector is written with the item, no longer generated

The generated column ran PostgreSQL's text-search parser over every new item's title, people and genre texts
(about 20 µs per fully described movie, a third of its item row's cost); the writer already has those words
at hand and now sends the vector as a `tsvector` literal (ingest.search_vector). The texts it was generated
from are no longer stored, except the title (exact-title ranking, substring search).

The upgrade keeps every stored vector as it is (DROP EXPRESSION). The downgrade rebuilds the people and genre
texts from credits and genres and generates the vector from them again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENERATED = (
    "setweight(to_tsvector('simple'::regconfig, search_title), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, search_people), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, search_genres), 'C')"
)


def upgrade() -> None:
    op.execute("ALTER TABLE catalog.items ALTER COLUMN search_vector DROP EXPRESSION")
    op.execute("UPDATE catalog.items SET search_vector = ''::tsvector WHERE search_vector IS NULL")
    op.alter_column("items", "search_vector", nullable=False, server_default=sa.text("''::tsvector"), schema="catalog")
    op.drop_column("items", "search_people", schema="catalog")
    op.drop_column("items", "search_genres", schema="catalog")


def downgrade() -> None:
    op.drop_index("ix_items_search_vector", table_name="items", schema="catalog")
    op.drop_column("items", "search_vector", schema="catalog")
    op.add_column("items", sa.Column("search_people", sa.Text(), server_default="", nullable=False), schema="catalog")
    op.add_column("items", sa.Column("search_genres", sa.Text(), server_default="", nullable=False), schema="catalog")
    op.execute(
        "UPDATE catalog.items i SET search_people = c.names FROM (SELECT c.item_id, "
        "lower(string_agg(p.name, ' ' ORDER BY c.role, c.position)) AS names FROM catalog.credits c "
        "JOIN catalog.people p ON p.id = c.person_id GROUP BY c.item_id) c WHERE i.id = c.item_id"
    )
    op.execute("UPDATE catalog.items SET search_genres = lower(array_to_string(genres, ' ')) WHERE genres <> '{}'")
    op.add_column(
        "items",
        sa.Column("search_vector", postgresql.TSVECTOR(), sa.Computed(_GENERATED, persisted=True), nullable=True),
        schema="catalog",
    )
    op.create_index("ix_items_search_vector", "items", ["search_vector"], schema="catalog", postgresql_using="gin")
