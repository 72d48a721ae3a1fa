"""audit log: scanner.audit_events, who changed or was denied what (plexsync.common.audit)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 08:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from plexsync.common.audit_schema import create_audit_table, drop_audit_table

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_table(op, "scanner")


def downgrade() -> None:
    drop_audit_table(op, "scanner")
