"""audit log: catalog.audit_events, who changed or was denied what (plexsync.common.audit)

Also the catalog's outbox (plexsync.common.outbox), which it had none of: audit events are rows first, like
the lifecycle events of the other services.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 08:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from plexsync.common.audit_schema import create_audit_table, create_outbox_table, drop_audit_table

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_table(op, "catalog")
    create_outbox_table(op, "catalog")


def downgrade() -> None:
    op.drop_table("outbox", schema="catalog")
    drop_audit_table(op, "catalog")
