"""The scheduler schema's Alembic migrations, run at start-up and by `python -m plexsync.scheduler migrate`."""

from __future__ import annotations

from pathlib import Path

from plexsync.common.migrations import SchemaMigrations
from plexsync.scheduler.models import SCHEMA, Base

MIGRATIONS = SchemaMigrations(SCHEMA, Base.metadata, Path(__file__).resolve().parent)


def migrate(database_url: str, action: str = "upgrade", revision: str = "head") -> None:
    """Upgrade or downgrade the scheduler schema, holding its advisory lock."""
    MIGRATIONS.migrate(database_url, action, revision)
