"""item value lists: genres, studios, labels, countries, networks, guids and artwork as columns of the item

A fully described movie had ten rows in item_tags, item_guids and artwork besides its own: each a heap tuple,
a primary-key entry and their WAL, written with every new item and read back with it every time, never on
their own. PostgreSQL spent more on those ten rows than on the item row (COPY of 20,000 movies, alone: 31 µs
per movie for the three tables against 60 for items; as columns of the item, 0.70 of the four tables' time).
They become arrays (tags) and JSONB lists (guids, artwork, the shape collections already use) on the item;
ListNetworks finds shows through a partial index of items that have networks.

The upgrade moves existing rows into the new columns in their order (rewriting each item row once: on a large
catalog, run `python -m plexsync.catalog migrate upgrade head` as a Job with PLEXSYNC_CATALOG_MIGRATE=0 on the
service); the downgrade moves them back.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 22:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tag kinds of the former item_tags table, by column.
_TAG_KINDS = {"studios": 1, "genres": 2, "labels": 3, "countries": 4, "networks": 5}


def upgrade() -> None:
    for name in _TAG_KINDS:
        op.add_column(
            "items", sa.Column(name, postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False), schema="catalog"
        )
    for name in ("guids", "artwork"):
        op.add_column(
            "items",
            sa.Column(name, postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
            schema="catalog",
        )
    tag_lists = ", ".join(
        f"coalesce(array_agg(name ORDER BY position) FILTER (WHERE kind = {kind}), '{{}}') AS {name}"
        for name, kind in _TAG_KINDS.items()
    )
    op.execute(
        "UPDATE catalog.items i SET " + ", ".join(f"{name} = t.{name}" for name in _TAG_KINDS)
        + f" FROM (SELECT item_id, {tag_lists} FROM catalog.item_tags GROUP BY item_id) t WHERE i.id = t.item_id"
    )  # fmt: skip
    op.execute(
        "UPDATE catalog.items i SET guids = g.list FROM (SELECT item_id, jsonb_agg(jsonb_build_object("
        "'uri', uri, 'provider', provider, 'external_id', external_id) ORDER BY position) AS list "
        "FROM catalog.item_guids GROUP BY item_id) g WHERE i.id = g.item_id"
    )
    op.execute(
        "UPDATE catalog.items i SET artwork = a.list FROM (SELECT item_id, jsonb_agg(jsonb_build_object("
        "'kind', kind, 'url', url, 'source', source, "
        "'updated_at', floor(extract(epoch FROM source_updated_at))::int8) || CASE "
        "WHEN extract(microseconds FROM source_updated_at)::int8 % 1000000 <> 0 THEN jsonb_build_object("
        "'updated_nanos', (extract(microseconds FROM source_updated_at)::int8 % 1000000) * 1000) "
        "ELSE '{}'::jsonb END ORDER BY position) AS list FROM catalog.artwork GROUP BY item_id) a "
        "WHERE i.id = a.item_id"
    )
    op.drop_table("item_tags", schema="catalog")
    op.drop_table("item_guids", schema="catalog")
    op.drop_table("artwork", schema="catalog")
    op.create_index(
        "ix_items_with_networks",
        "items",
        ["library_id"],
        schema="catalog",
        postgresql_where=sa.text("networks <> '{}'::text[]"),
    )


def downgrade() -> None:
    op.drop_index("ix_items_with_networks", table_name="items", schema="catalog")
    op.create_table(
        "artwork",
        sa.Column("item_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), server_default="", nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("item_id", "kind", "url", name=op.f("pk_artwork")),
        schema="catalog",
    )
    op.create_table(
        "item_guids",
        sa.Column("item_id", sa.UUID(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), server_default="", nullable=False),
        sa.Column("external_id", sa.Text(), server_default="", nullable=False),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("item_id", "uri", name=op.f("pk_item_guids")),
        schema="catalog",
    )
    op.create_table(
        "item_tags",
        sa.Column("item_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("item_id", "kind", "name", name=op.f("pk_item_tags")),
        schema="catalog",
    )
    op.create_index(
        "ix_item_tags_network_name",
        "item_tags",
        ["name"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("kind = 5"),
    )
    lists = ", ".join(f"({kind}, i.{name})" for name, kind in _TAG_KINDS.items())
    op.execute(
        "INSERT INTO catalog.item_tags (item_id, kind, name, position) SELECT i.id, k.kind, t.name, t.ord - 1 "
        f"FROM catalog.items i CROSS JOIN LATERAL (VALUES {lists}) AS k(kind, names) "
        "CROSS JOIN LATERAL unnest(k.names) WITH ORDINALITY AS t(name, ord)"
    )
    op.execute(
        "INSERT INTO catalog.item_guids (item_id, uri, provider, external_id, position) "
        "SELECT i.id, g.v->>'uri', g.v->>'provider', g.v->>'external_id', g.ord - 1 "
        "FROM catalog.items i CROSS JOIN LATERAL jsonb_array_elements(i.guids) WITH ORDINALITY AS g(v, ord)"
    )
    op.execute(
        "INSERT INTO catalog.artwork (item_id, kind, url, source, source_updated_at, position) "
        "SELECT i.id, (a.v->>'kind')::int2, a.v->>'url', a.v->>'source', "
        "to_timestamp((a.v->>'updated_at')::int8) + coalesce((a.v->>'updated_nanos')::int8 / 1000, 0) "
        "* interval '1 microsecond', a.ord - 1 "
        "FROM catalog.items i CROSS JOIN LATERAL jsonb_array_elements(i.artwork) WITH ORDINALITY AS a(v, ord)"
    )
    for name in ("artwork", "guids", *_TAG_KINDS):
        op.drop_column("items", name, schema="catalog")
