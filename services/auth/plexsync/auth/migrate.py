"""The auth schema's Alembic migrations, run at start-up under an advisory lock."""

from __future__ import annotations

from pathlib import Path

from plexsync.auth.models import SCHEMA, Base
from plexsync.common.migrations import SchemaMigrations

MIGRATIONS = SchemaMigrations(SCHEMA, Base.metadata, Path(__file__).resolve().parent)
