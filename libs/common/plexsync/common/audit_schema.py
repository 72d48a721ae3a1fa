"""DDL of the ``audit_events`` table, shared by the migrations of every service (each owns one in its schema).

Kept apart from `plexsync.common.audit` so a migration imports only SQLAlchemy, not the recorder. The DDL here is
what revisions auth 0003, catalog 0008, scanner 0005 and scheduler 0003 create: change the table with a new
revision, not by editing these functions.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

TABLE = "audit_events"
# Newest-first keyset paging, and the filters of ListAuditEvents.
INDEXES: dict[str, tuple[str, ...]] = {
    "ix_audit_events_occurred_at_id": ("occurred_at", "id"),
    "ix_audit_events_action": ("action", "occurred_at"),
    "ix_audit_events_actor": ("actor_identity", "occurred_at"),
    "ix_audit_events_resource": ("resource_type", "resource_id"),
}


def create_audit_table(op: Any, schema: str) -> None:
    """Create ``<schema>.audit_events`` and the indexes `ListAuditEvents` filters and pages by."""
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column(
            "occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
        ),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("actor_identity", sa.Text(), nullable=False, server_default=""),
        sa.Column("actor_role", sa.Text(), nullable=False, server_default=""),
        sa.Column("peer", sa.Text(), nullable=False, server_default=""),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False, server_default=""),
        sa.Column("resource_type", sa.Text(), nullable=False, server_default=""),
        sa.Column("resource_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("before", postgresql.JSONB()),
        sa.Column("after", postgresql.JSONB()),
        sa.Column("trace_id", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sa.UniqueConstraint("event_id", name="uq_audit_events_event_id"),
        sa.CheckConstraint("outcome IN ('success', 'denied', 'failure')", name="ck_audit_events_outcome"),
        schema=schema,
    )
    for name, columns in INDEXES.items():
        op.create_index(name, TABLE, list(columns), schema=schema)


def drop_audit_table(op: Any, schema: str) -> None:
    op.drop_table(TABLE, schema=schema)


def create_outbox_table(op: Any, schema: str) -> None:
    """The `plexsync.common.outbox` table, for a service that had none (the same DDL as auth's 0002)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("msg_id", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        schema=schema,
    )


class AuditColumns:
    """The ORM side of the table; each service's models declare ``class AuditRow(AuditColumns, Base)``."""

    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(postgresql.UUID(as_uuid=True), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
    )
    service: Mapped[str] = mapped_column(sa.Text, nullable=False)
    actor_identity: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    actor_role: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    peer: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    action: Mapped[str] = mapped_column(sa.Text, nullable=False)
    method: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    resource_type: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    resource_id: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    outcome: Mapped[str] = mapped_column(sa.Text, nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(postgresql.JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(postgresql.JSONB)
    trace_id: Mapped[str] = mapped_column(sa.Text, nullable=False, server_default="")

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            sa.UniqueConstraint("event_id", name="uq_audit_events_event_id"),
            sa.CheckConstraint("outcome IN ('success', 'denied', 'failure')", name="outcome"),
            *(sa.Index(name, *columns) for name, columns in INDEXES.items()),
        )
