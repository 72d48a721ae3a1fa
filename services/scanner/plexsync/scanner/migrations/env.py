"""Alembic environment of the scanner schema (version table inside the schema)."""

from alembic import context
from plexsync.scanner.migrate import MIGRATIONS

MIGRATIONS.run_env(context)
