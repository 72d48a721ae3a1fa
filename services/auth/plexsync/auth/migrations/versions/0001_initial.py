"""auth schema: client identity, tokens, accounts, servers, connections, PIN logins

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

S = "auth"


def _ts(name: str, nullable: bool = False, default: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=sa.func.now() if default else None
    )


def upgrade() -> None:
    op.create_table(
        "client_identity",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client_identifier", sa.String(64), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("id = 1", name="ck_client_identity_single_row"),
        schema=S,
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        _ts("invalid_at", nullable=True, default=False),
        _ts("created_at"),
        _ts("updated_at"),
        schema=S,
    )
    op.create_index("ix_tokens_key_id", "tokens", ["key_id"], schema=S)
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("plex_id", sa.BigInteger()),
        sa.Column("plex_uuid", sa.String(128), nullable=False, unique=True),
        sa.Column("username", sa.Text(), nullable=False, server_default=""),
        sa.Column("email", sa.Text(), nullable=False, server_default=""),
        sa.Column("title", sa.Text(), nullable=False, server_default=""),
        sa.Column("thumb_url", sa.Text(), nullable=False, server_default=""),
        sa.Column("token_id", sa.Uuid(), sa.ForeignKey(f"{S}.tokens.id", ondelete="SET NULL")),
        _ts("created_at"),
        _ts("updated_at"),
        schema=S,
    )
    op.create_table(
        "servers",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("machine_identifier", sa.String(128), nullable=False, unique=True),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("version", sa.Text(), nullable=False, server_default=""),
        sa.Column("platform", sa.Text(), nullable=False, server_default=""),
        sa.Column("owned", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(32), nullable=False, server_default="unknown"),
        sa.Column("status_reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey(f"{S}.accounts.id", ondelete="SET NULL")),
        sa.Column("token_id", sa.Uuid(), sa.ForeignKey(f"{S}.tokens.id", ondelete="SET NULL")),
        sa.Column("preferred_uri", sa.Text()),
        _ts("last_seen_at", nullable=True, default=False),
        _ts("created_at"),
        _ts("updated_at"),
        schema=S,
    )
    op.create_index("ix_servers_account_id", "servers", ["account_id"], schema=S)
    op.create_index("ix_servers_created_at_id", "servers", ["created_at", "id"], schema=S)
    op.create_table(
        "connections",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("server_id", sa.Uuid(), sa.ForeignKey(f"{S}.servers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("protocol", sa.String(16), nullable=False, server_default="http"),
        sa.Column("address", sa.Text(), nullable=False, server_default=""),
        sa.Column("port", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ipv6", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("reachable", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("latency_ms", sa.Float()),
        _ts("last_check_at", nullable=True, default=False),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        _ts("created_at"),
        sa.UniqueConstraint("server_id", "uri", name="uq_connections_server_id_uri"),
        schema=S,
    )
    op.create_table(
        "pin_logins",
        sa.Column("pin_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        _ts("expires_at", default=False),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey(f"{S}.accounts.id", ondelete="SET NULL")),
        _ts("created_at"),
        schema=S,
    )


def downgrade() -> None:
    for table in ("pin_logins", "connections", "servers", "accounts", "tokens", "client_identity"):
        op.drop_table(table, schema=S)
