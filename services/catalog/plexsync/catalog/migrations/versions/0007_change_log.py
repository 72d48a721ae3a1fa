"""change log: libraries.realtime_enabled, the item_changes log behind WatchChanges, and its feed state

`item_changes` is written in the transactions that change items (WriteItems, FinishScan, MarkItemsMissing), as
their last statement, under one transaction advisory lock, so `seq` (from `item_changes_seq`, taken under that
lock) grows in commit order: a reader that has seen seq N has seen every change committed before it.
`change_feed` is one row: the key resume tokens are signed with (random per deployment, made here) and the
highest seq the retention prune deleted (older tokens have expired). No foreign keys on the log: inserting a
change row must never wait for a lock on another table while the change-log lock is held.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "libraries",
        sa.Column("realtime_enabled", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        schema="catalog",
    )
    op.execute("CREATE SEQUENCE catalog.item_changes_seq AS bigint")
    op.create_table(
        "item_changes",
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("library_id", UUID(as_uuid=True), nullable=False),
        sa.Column("item_id", UUID(as_uuid=True), nullable=False),
        sa.Column("rating_key", sa.Text(), nullable=False),
        sa.Column("item_kind", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("scan_id", UUID(as_uuid=True)),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False, server_default=""),
        sa.Column(
            "committed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
        ),
        schema="catalog",
    )
    op.create_index("ix_item_changes_library_id_seq", "item_changes", ["library_id", "seq"], schema="catalog")
    op.create_index(
        "ix_item_changes_committed_at", "item_changes", ["committed_at"], schema="catalog", postgresql_using="brin"
    )
    op.create_table(
        "change_feed",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("token_key", sa.LargeBinary(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("id = 1", name="one_row"),
        schema="catalog",
    )
    # 256 bits from PostgreSQL's strong random source (gen_random_uuid: 122 random bits each).
    op.execute(
        "INSERT INTO catalog.change_feed (id, token_key) VALUES "
        "(1, uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))"
    )


def downgrade() -> None:
    op.drop_table("change_feed", schema="catalog")
    op.drop_index("ix_item_changes_committed_at", table_name="item_changes", schema="catalog")
    op.drop_index("ix_item_changes_library_id_seq", table_name="item_changes", schema="catalog")
    op.drop_table("item_changes", schema="catalog")
    op.execute("DROP SEQUENCE catalog.item_changes_seq")
    op.drop_column("libraries", "realtime_enabled", schema="catalog")
