"""Alembic environment of the catalog schema (version table inside the schema)."""

from alembic import context
from plexsync.catalog.migrate import MIGRATIONS

MIGRATIONS.run_env(context)
